import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import createDebug from 'debug';
import { CorruptImageError, StillpointError } from '../errors.ts';
import type { RepositoryKeys } from './codec.ts';

const debug = createDebug('stillpoint:repository');

export interface WorkerInit {
  compressionLevel: number;
}

export type WorkerTask =
  | { op: 'keys'; keys: { encKey: Uint8Array; idKey: Uint8Array } | null }
  | { op: 'seal'; seq: number; buf: ArrayBuffer; length: number }
  | { op: 'open'; seq: number; name: string; expectId: string | null; blob: ArrayBuffer; out?: ArrayBuffer };

export type WorkerReply =
  | { seq: number; ok: true; id: string | null; blob: ArrayBuffer | null; buf: ArrayBuffer | null; blobLength?: number }
  | { seq: number; ok: false; error: string; corrupt: boolean };

export interface SealResult {
  /** Chunk name, or null for an all-zero chunk (recorded, not stored). */
  id: string | null;
  /**
   * The sealed blob: usually a view of `buf` (the worker writes it over the chunk when `buf` has
   * room), so it is valid only until `buf` is reused.
   */
  blob: Buffer | null;
  /** The input buffer, handed back for reuse. */
  buf: ArrayBuffer;
}

interface Pending {
  resolve(reply: WorkerReply): void;
  reject(error: Error): void;
}

/**
 * A small pool of chunk workers (one per core, at most 4): hashing, zstd and AES-GCM run in
 * parallel while the main thread reads and stores. Buffers are transferred, not copied.
 */
export class ChunkWorkers {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly pending = new Map<number, Pending & { worker: number }>();
  private seq = 0;
  private closed = false;

  private keysSet = false;

  /**
   * Start the workers; they load while the caller derives the keys (scrypt), which it then hands
   * over with `setKeys` before the first task.
   */
  constructor(keys: RepositoryKeys | null | undefined, compressionLevel: number, count = defaultWorkerCount()) {
    const init: WorkerInit = { compressionLevel };
    const tsx = import.meta.resolve('tsx/esm/api');
    const script = new URL('./chunk-worker.ts', import.meta.url).href;
    const bootstrap = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(script)}); })`;
    for (let i = 0; i < count; i++) {
      const worker = new Worker(bootstrap, { eval: true, workerData: init });
      worker.unref();
      worker.on('message', (reply: WorkerReply) => this.onReply(i, reply));
      worker.on('error', (error) => this.failAll(i, error));
      worker.on('exit', (code) => {
        if (!this.closed) this.failAll(i, new StillpointError(`chunk worker exited with code ${code}`));
      });
      this.workers.push(worker);
      this.load.push(0);
    }
    debug('started %d chunk workers', count);
    if (keys !== undefined) this.setKeys(keys);
  }

  /** The repository's keys (null: not encrypted). Must come before the first task. */
  setKeys(keys: RepositoryKeys | null): void {
    const message: WorkerTask = { op: 'keys', keys: keys ? { encKey: new Uint8Array(keys.encKey), idKey: new Uint8Array(keys.idKey) } : null };
    for (const w of this.workers) w.postMessage(message);
    this.keysSet = true;
  }

  get size(): number {
    return this.workers.length;
  }

  /** Hash, compress and encrypt `length` bytes of `buf` (transferred to the worker and handed back). */
  async seal(buf: ArrayBuffer, length: number): Promise<SealResult> {
    const reply = await this.run((seq) => ({ op: 'seal', seq, buf, length }), [buf]);
    if (!reply.ok) throw new StillpointError(`sealing a chunk failed: ${reply.error}`);
    const blob = reply.blob ? Buffer.from(reply.blob) : reply.blobLength !== undefined ? Buffer.from(reply.buf!, 0, reply.blobLength) : null;
    return { id: reply.id, blob, buf: reply.buf! };
  }

  /**
   * Decrypt and decompress blob `name`; with `expectId`, re-hash and compare (CorruptImageError if
   * not). With `out` (transferred), the plaintext is written into it when it fits, and the result
   * is a view of it: no new buffer crosses to this thread (the caller may hand `out` back later).
   */
  async open(name: string, blob: Buffer, expectId: string | null, out?: ArrayBuffer): Promise<Buffer> {
    const ab = blob.byteOffset === 0 && blob.byteLength === blob.buffer.byteLength && blob.buffer instanceof ArrayBuffer
      ? blob.buffer
      : new Uint8Array(blob).buffer;
    const transfer = out ? [ab as ArrayBuffer, out] : [ab as ArrayBuffer];
    const reply = await this.run((seq) => ({ op: 'open', seq, name, expectId, blob: ab as ArrayBuffer, out }), transfer);
    if (!reply.ok) {
      // The worker's message already names the blob and says what to do.
      if (reply.corrupt) throw new CorruptImageError(reply.error);
      throw new StillpointError(reply.error);
    }
    if (reply.blob === null && reply.buf && reply.blobLength !== undefined) return Buffer.from(reply.buf, 0, reply.blobLength);
    return Buffer.from(reply.blob!);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private run(make: (seq: number) => WorkerTask, transfer: ArrayBuffer[]): Promise<WorkerReply> {
    if (this.closed) return Promise.reject(new StillpointError('chunk workers are closed'));
    if (!this.keysSet) return Promise.reject(new StillpointError('chunk workers have no keys yet'));
    const seq = ++this.seq;
    let best = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i] < this.load[best]) best = i;
    if (this.load[best]++ === 0) this.workers[best].ref();
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject, worker: best });
      this.workers[best].postMessage(make(seq), transfer);
    });
  }

  private onReply(worker: number, reply: WorkerReply): void {
    const p = this.pending.get(reply.seq);
    if (!p) return;
    this.pending.delete(reply.seq);
    if (--this.load[worker] === 0) this.workers[worker].unref();
    p.resolve(reply);
  }

  private failAll(worker: number, error: Error): void {
    for (const [seq, p] of this.pending) {
      if (p.worker === worker) {
        this.pending.delete(seq);
        this.load[worker]--;
        p.reject(error);
      }
    }
  }
}

export function defaultWorkerCount(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}
