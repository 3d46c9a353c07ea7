/**
 * A storage target: a flat blob store. The repository (chunks, manifests, locks) is built on top
 * of this contract by the core; a storage plugin only implements these methods.
 *
 * Rules every target follows (the test kit in `stillpoint/testing` checks them):
 * - `put` is atomic: afterwards the key holds all of `data`, or, if `put` failed, the old value or nothing.
 *   It resolves only when the data is durable.
 * - `get` of a missing key rejects with `NotFoundError` (core/errors.ts).
 * - Keys are `/`-separated relative paths of [A-Za-z0-9._-] segments.
 * - Transient faults (connection dropped, timeout) reject with `TransientError` so the caller may retry.
 */
export interface StorageTarget {
  readonly name: string;
  put(key: string, data: Buffer): Promise<void>;
  get(key: string): Promise<Buffer>;
  getRange?(key: string, offset: number, length: number): Promise<Buffer>;
  /** Size of the stored object, or `null` when it does not exist. */
  head(key: string): Promise<{ size: number } | null>;
  /** Every key that starts with `prefix`, in no particular order. */
  list(prefix: string): AsyncIterable<string>;
  /** Delete; deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  close?(): Promise<void>;
}
