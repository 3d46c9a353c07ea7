import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import createDebug from 'debug';
import { CorruptImageError, StillpointError } from '../errors.ts';
import type { RepositoryKeys } from './codec.ts';
import type { ChunkHash } from './format.ts';
import { nativeGcm } from '../util/gcm.ts';

const debug = createDebug('stillpoint:repository');

/** What every chunk worker is started with: the repository's settings for sealing and naming chunks. */
export interface WorkerInit {
  compressionLevel: number;
  chunkHash: ChunkHash;
}

export type WorkerTask =
  | { op: 'keys'; keys: { encKey: Uint8Array; idKey: Uint8Array } | null }
  | { op: 'sealMany'; seq: number; bufs: ArrayBuffer[]; lengths: number[]; previous?: Array<string | null> }
  | { op: 'slab'; id: number; sab: SharedArrayBuffer | null }
  | { op: 'open'; seq: number; name: string; expectId: string | null; blob: ArrayBuffer; out?: ArrayBuffer; into?: SlabPlace }
  | { op: 'openRun'; seq: number; blob: ArrayBuffer; items: RunItem[]; outs: ArrayBuffer[]; into?: SlabPlace[] };

/**
 * A place in a slab (a SharedArrayBuffer shared with every worker once, `shareSlab`): plaintext
 * written there crosses no thread boundary, so the main thread's heap sees no new memory per
 * chunk (transferred buffers count as new memory and bring on garbage collections).
 */
export interface SlabPlace {
  slab: number;
  offset: number;
  length: number;
}

/** One blob of a run: where it lies in the run's buffer, its name and (to re-hash) its chunk id. */
export interface RunItem {
  name: string;
  offset: number;
  length: number;
  expectId: string | null;
}

/** What became of one blob of a run: its plaintext (`length` bytes of `buf`), or why not. */
export type RunResult = { ok: true; buf: ArrayBuffer | null; length: number } | { ok: false; error: string; corrupt: boolean };

/** One chunk sealed by `sealMany`, or why it failed. */
export type SealedItem =
  | { ok: true; id: string | null; blob: ArrayBuffer | null; buf: ArrayBuffer; blobLength?: number; unchanged?: true }
  | { ok: false; error: string };

export type WorkerReply =
  | { seq: number; ok: true; blob: ArrayBuffer | null; buf: ArrayBuffer | null; blobLength?: number }
  | { seq: number; ok: true; sealed: SealedItem[] }
  | { seq: number; ok: false; error: string; corrupt: boolean }
  | { seq: number; ok: true; run: RunResult[] };

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
  /** The chunk hashed to the name it was said to have had before: not compressed or encrypted (`blob` is null). */
  unchanged: boolean;
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
  private readonly workers: WorkerSlot[] = [];
  private readonly load: number[] = [];
  private readonly pending = new Map<number, Pending & { worker: number; weight: number }>();
  private seq = 0;
  private closed = false;

  private keysSet = false;

  /**
   * Start the workers; they load while the caller derives the keys (scrypt), which it then hands
   * over with `setKeys` before the first task. They start one after another, each once the one
   * before it runs: a worker's start-up takes a core for ~25 ms, and all of them at once took
   * both cores from scrypt, which nothing can go on without (messages to a worker not yet started
   * wait for it).
   */
  constructor(keys: RepositoryKeys | null | undefined, init: WorkerInit, count = defaultWorkerCount()) {
    const entry = workerEntry();
    // The workers encrypt through the native library when it is there (codec.ts, util/gcm.ts).
    // It is loaded here first: ffi-rs, a napi-rs addon, crashes the process when a worker thread
    // that loaded it exits, unless the main thread had loaded it before (napi-rs/package-template#308).
    nativeGcm();
    for (let i = 0; i < count; i++) {
      const slot = new WorkerSlot(() => {
        const worker = entry.eval ? new Worker(entry.code, { eval: true, workerData: init }) : new Worker(entry.url, { workerData: init });
        worker.on('message', (reply: WorkerReply) => this.onReply(i, reply));
        worker.on('error', (error) => this.failAll(i, error));
        worker.on('exit', (code) => {
          if (!this.closed) this.failAll(i, new StillpointError(`chunk worker exited with code ${code}`));
        });
        // The next one starts once this one runs (or could not start).
        const next = () => this.workers[i + 1]?.start();
        worker.once('online', next).once('error', next);
        return worker;
      });
      this.workers.push(slot);
      this.load.push(0);
    }
    this.workers[0]?.start();
    debug('starting %d chunk workers', count);
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

  private readonly slabs: Array<SharedArrayBuffer | null> = [];

  /** Share `sab` with every worker (once); returns its id for `SlabPlace`s. */
  shareSlab(sab: SharedArrayBuffer): number {
    const known = this.slabs.indexOf(sab);
    if (known >= 0) return known;
    const id = this.slabs.push(sab) - 1;
    for (const w of this.workers) w.postMessage({ op: 'slab', id, sab } satisfies WorkerTask);
    return id;
  }

  /** Let go of a slab no task uses any more (the workers drop it too). */
  unshareSlab(sab: SharedArrayBuffer): void {
    const id = this.slabs.indexOf(sab);
    if (id < 0) return;
    this.slabs[id] = null;
    for (const w of this.workers) w.postMessage({ op: 'slab', id, sab: null } satisfies WorkerTask);
  }

  private slabView(place: SlabPlace, length: number): Buffer {
    return Buffer.from(this.slabs[place.slab]!, place.offset, length);
  }

  /**
   * Hash, compress and encrypt `lengths[i]` bytes of each of `bufs` (transferred to one worker in one
   * message and handed back: neighbours read together cost one wake-up and one reply). One promise
   * per chunk, so that a failure stays its own. A chunk whose name turns out to be `previous[i]`
   * (the chunk at its place in the previous restore point) is only named: it is already stored,
   * so it is not compressed or encrypted again (`unchanged`).
   */
  sealMany(bufs: ArrayBuffer[], lengths: number[], previous?: Array<string | null>): Array<Promise<SealResult>> {
    const reply = this.run((seq) => ({ op: 'sealMany', seq, bufs, lengths, previous }), bufs, bufs.length);
    return bufs.map(async (_, i) => {
      const r = await reply;
      if (!r.ok) throw new StillpointError(`sealing a chunk failed: ${r.error}`);
      if (!('sealed' in r)) throw new StillpointError('chunk worker answered several chunks with one result');
      const one = r.sealed[i];
      if (!one.ok) throw new StillpointError(`sealing a chunk failed: ${one.error}`);
      // The blob is its own buffer, or the first `blobLength` bytes of the chunk's buffer.
      const blob = one.blob ? Buffer.from(one.blob) : one.blobLength !== undefined ? Buffer.from(one.buf, 0, one.blobLength) : null;
      return { id: one.id, blob, buf: one.buf, unchanged: one.unchanged === true };
    });
  }

  /**
   * Decrypt and decompress blob `name`; with `expectId`, re-hash and compare (CorruptImageError if
   * not). With `out` (transferred), the plaintext is written into it when it fits, and the result
   * is a view of it: no new buffer crosses to this thread (the caller may hand `out` back later).
   */
  async open(name: string, blob: Buffer, expectId: string | null, out?: ArrayBuffer, into?: SlabPlace): Promise<Buffer> {
    const ab = blob.byteOffset === 0 && blob.byteLength === blob.buffer.byteLength && blob.buffer instanceof ArrayBuffer
      ? blob.buffer
      : new Uint8Array(blob).buffer;
    const transfer = out && !into ? [ab as ArrayBuffer, out] : [ab as ArrayBuffer];
    const reply = await this.run((seq) => ({ op: 'open', seq, name, expectId, blob: ab as ArrayBuffer, out: into ? undefined : out, into }), transfer);
    if (!reply.ok) {
      // The worker's message already names the blob and says what to do.
      if (reply.corrupt) throw new CorruptImageError(reply.error);
      throw new StillpointError(reply.error);
    }
    if ('run' in reply || 'sealed' in reply) throw new StillpointError('chunk worker answered a blob with several results');
    if (into && reply.blob === null && reply.buf === null && reply.blobLength !== undefined) return this.slabView(into, reply.blobLength);
    if (reply.blob === null && reply.buf && reply.blobLength !== undefined) return Buffer.from(reply.buf, 0, reply.blobLength);
    return Buffer.from(reply.blob!);
  }

  /**
   * Decrypt and decompress several blobs that were read together (one ranged read of a pack):
   * `blob` is transferred whole to one worker, so no blob is copied out of it. Each item's
   * plaintext goes into the matching `outs` buffer when it fits. One promise per item, so that a
   * damaged blob fails alone.
   */
  openRun(blob: Buffer, items: RunItem[], outs: ArrayBuffer[], into?: SlabPlace[]): Array<Promise<Buffer>> {
    const ab = blob.byteOffset === 0 && blob.byteLength === blob.buffer.byteLength && blob.buffer instanceof ArrayBuffer
      ? blob.buffer
      : new Uint8Array(blob).buffer;
    const reply = into
      ? this.run((seq) => ({ op: 'openRun', seq, blob: ab as ArrayBuffer, items, outs: [], into }), [ab as ArrayBuffer], items.length)
      : this.run((seq) => ({ op: 'openRun', seq, blob: ab as ArrayBuffer, items, outs }), [ab as ArrayBuffer, ...outs], items.length);
    return items.map(async (_, i) => {
      const r = await reply;
      if (!r.ok) throw r.corrupt ? new CorruptImageError(r.error) : new StillpointError(r.error);
      if (!('run' in r)) throw new StillpointError('chunk worker answered a run with a single result');
      const one = r.run[i];
      if (!one.ok) throw one.corrupt ? new CorruptImageError(one.error) : new StillpointError(one.error);
      return one.buf ? Buffer.from(one.buf, 0, one.length) : this.slabView(into![i], one.length);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.close()));
  }

  /** Post a task to the least loaded worker; `weight`: how many chunks it holds. */
  private run(make: (seq: number) => WorkerTask, transfer: ArrayBuffer[], weight = 1): Promise<WorkerReply> {
    if (this.closed) return Promise.reject(new StillpointError('chunk workers are closed'));
    if (!this.keysSet) return Promise.reject(new StillpointError('chunk workers have no keys yet'));
    const seq = ++this.seq;
    let best = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i] < this.load[best]) best = i;
    if (this.load[best] === 0) this.workers[best].ref();
    this.load[best] += weight;
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject, worker: best, weight });
      this.workers[best].postMessage(make(seq), transfer);
    });
  }

  private onReply(worker: number, reply: WorkerReply): void {
    const p = this.pending.get(reply.seq);
    if (!p) return;
    this.pending.delete(reply.seq);
    this.load[worker] -= p.weight;
    if (this.load[worker] === 0) this.workers[worker].unref();
    p.resolve(reply);
  }

  private failAll(worker: number, error: Error): void {
    for (const [seq, p] of this.pending) {
      if (p.worker === worker) {
        this.pending.delete(seq);
        this.load[worker] -= p.weight;
        p.reject(error);
      }
    }
  }
}

/**
 * One worker of the pool, started on demand (`start`): messages posted before then wait for it,
 * and so does whether it keeps the process alive (`ref`).
 */
class WorkerSlot {
  private worker: Worker | null = null;
  private waiting: Array<{ message: WorkerTask; transfer: ArrayBuffer[] }> = [];
  private refs = false;
  private closed = false;

  constructor(private readonly spawn: () => Worker) {}

  start(): void {
    if (this.worker || this.closed) return;
    this.worker = this.spawn();
    if (!this.refs) this.worker.unref();
    for (const { message, transfer } of this.waiting.splice(0)) this.worker.postMessage(message, transfer);
  }

  postMessage(message: WorkerTask, transfer: ArrayBuffer[] = []): void {
    if (this.worker) this.worker.postMessage(message, transfer);
    else this.waiting.push({ message, transfer });
  }

  /** Keep the process alive while this worker has work (`ref`), or not (`unref`). */
  ref(): void {
    this.refs = true;
    this.start(); // work for it: no more waiting for the one before it
    this.worker?.ref();
  }

  unref(): void {
    this.refs = false;
    this.worker?.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.waiting = [];
    await this.worker?.terminate();
  }
}

/**
 * How a worker starts: from the TypeScript sources (through tsx, as the tests and the CLI run),
 * or, when this module is part of a bundle (scripts/build.ts), from the bundled
 * `chunk-worker.js` next to it, which starts several times faster.
 */
function workerEntry(): { eval: true; code: string } | { eval: false; url: URL } {
  if (!import.meta.url.endsWith('.ts')) return { eval: false, url: new URL('./chunk-worker.js', import.meta.url) };
  const tsx = import.meta.resolve('tsx/esm/api');
  const script = new URL('./chunk-worker.ts', import.meta.url).href;
  return { eval: true, code: `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(script)}); })` };
}

export function defaultWorkerCount(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}
