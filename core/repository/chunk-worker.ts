/**
 * A chunk worker (worker_threads): hashes, compresses and encrypts chunks for a backup, and
 * decrypts, decompresses and re-hashes them for a restore or a deep verify, off the main thread.
 * Started by `ChunkWorkers` (workers.ts); speaks only in messages.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { BlobCodec, chunkNamer, isAllZero, type ChunkNamer, type RepositoryKeys } from './codec.ts';
import { CorruptImageError } from '../errors.ts';
import type { RunResult, SealedItem, SlabPlace, WorkerInit, WorkerReply, WorkerTask } from './workers.ts';

const init = workerData as WorkerInit;
let keys: RepositoryKeys | null = null;
let codec = new BlobCodec({ keys, compressionLevel: init.compressionLevel });
/** Set with the keys (a keyed hash needs them); no chunk comes before the keys. */
let nameChunk: ChunkNamer = () => {
  throw new Error('chunk worker: a chunk came before the keys');
};
const port = parentPort!;

/** Slabs shared by the main thread (`ChunkWorkers.shareSlab`). */
const slabs: Array<SharedArrayBuffer | null> = [];

function slabView(place: SlabPlace): Uint8Array {
  const sab = slabs[place.slab];
  if (!sab) throw new Error(`slab ${place.slab} is not shared with this worker`);
  return new Uint8Array(sab, place.offset, place.length);
}

/** The plaintext in its slab place (copied there when the codec could not write it in place). */
function intoSlab(name: string, data: Buffer, place: SlabPlace): Uint8Array {
  if (data.buffer === slabs[place.slab] && data.byteOffset === place.offset) return data;
  if (data.byteLength > place.length) throw new CorruptImageError(`${name}: holds ${data.byteLength} bytes, more than a chunk`, { hint: 'run `stillpoint verify --deep`' });
  const view = slabView(place);
  view.set(data);
  return view.subarray(0, data.byteLength);
}

port.on('message', (task: WorkerTask) => {
  if (task.op === 'slab') {
    slabs[task.id] = task.sab;
    return;
  }
  if (task.op === 'keys') {
    keys = task.keys ? { encKey: Buffer.from(task.keys.encKey), idKey: Buffer.from(task.keys.idKey) } : null;
    codec = new BlobCodec({ keys, compressionLevel: init.compressionLevel });
    nameChunk = chunkNamer(init.chunkHash, keys);
    return;
  }
  try {
    if (task.op === 'sealMany') {
      const transfer: ArrayBuffer[] = [];
      const sealed = task.bufs.map((buf, i): SealedItem => {
        try {
          return sealChunk(buf, task.lengths[i], task.previous?.[i] ?? null, transfer);
        } catch (error) {
          if (!transfer.includes(buf)) transfer.push(buf);
          return { ok: false, error: (error as Error).message };
        }
      });
      reply({ seq: task.seq, ok: true, sealed }, transfer);
    } else if (task.op === 'openRun') {
      const results: RunResult[] = [];
      const transfer: ArrayBuffer[] = [];
      task.items.forEach((item, i) => {
        const out = task.outs[i];
        try {
          const place = task.into?.[i];
          if (place) {
            const data = intoSlab(item.name, codec.open(item.name, new Uint8Array(task.blob, item.offset, item.length), slabView(place)), place);
            checkId(item.name, data, item.expectId);
            results.push({ ok: true, buf: null, length: data.byteLength });
            return;
          }
          const data = codec.open(item.name, new Uint8Array(task.blob, item.offset, item.length), out ? new Uint8Array(out) : undefined);
          checkId(item.name, data, item.expectId);
          const buf = data.buffer === out ? out : toOwnedArrayBuffer(data);
          results.push({ ok: true, buf, length: data.byteLength });
          transfer.push(buf);
        } catch (error) {
          const e = error as Error;
          results.push({ ok: false, error: e.message, corrupt: e.name === 'CorruptImageError' });
        }
      });
      reply({ seq: task.seq, ok: true, run: results }, transfer);
    } else {
      if (task.into) {
        const data = intoSlab(task.name, codec.open(task.name, new Uint8Array(task.blob), slabView(task.into)), task.into);
        checkId(task.name, data, task.expectId);
        reply({ seq: task.seq, ok: true, blob: null, blobLength: data.byteLength, buf: null });
        return;
      }
      const data = codec.open(task.name, new Uint8Array(task.blob), task.out ? new Uint8Array(task.out) : undefined);
      checkId(task.name, data, task.expectId);
      if (task.out && data.buffer === task.out) {
        reply({ seq: task.seq, ok: true, blob: null, blobLength: data.byteLength, buf: task.out }, [task.out]);
        return;
      }
      const out = toOwnedArrayBuffer(data);
      reply({ seq: task.seq, ok: true, blob: out, buf: null }, [out]);
    }
  } catch (error) {
    const e = error as Error;
    reply({ seq: task.seq, ok: false, error: e.message, corrupt: e.name === 'CorruptImageError' });
  }
});

/**
 * Hash, compress and encrypt `length` bytes of `buf`. The blob is written over the chunk (no longer
 * needed) in the buffer that goes back anyway: no new buffer crosses to the main thread per chunk,
 * so its garbage collector has little to do. Buffers to hand back are added to `transfer`.
 * A chunk named `previous` (what its place held in the previous restore point) is stored already:
 * it is only named, which saves the compression and encryption of a full read's unchanged chunks.
 */
function sealChunk(buf: ArrayBuffer, length: number, previous: string | null, transfer: ArrayBuffer[]): Extract<SealedItem, { ok: true }> {
  const data = new Uint8Array(buf, 0, length);
  transfer.push(buf);
  if (isAllZero(data)) return { ok: true, id: null, blob: null, buf };
  const id = nameChunk(data);
  if (id === previous) return { ok: true, id, blob: null, buf, unchanged: true };
  // The blob's name is its storage key, `chunks/<xx>/<id>` (format.ts `keys.chunk`; not imported, to keep the worker light).
  const sealed = codec.seal(`chunks/${id.slice(0, 2)}/${id}`, data, new Uint8Array(buf));
  if (sealed.buffer === buf) return { ok: true, id, blob: null, blobLength: sealed.byteLength, buf };
  const blob = toOwnedArrayBuffer(sealed);
  transfer.push(blob);
  return { ok: true, id, blob, buf };
}

/** With `expectId`, the plaintext must hash to the chunk's name. */
function checkId(name: string, data: Uint8Array, expectId: string | null): void {
  if (expectId === null) return;
  const id = nameChunk(data);
  if (id !== expectId) {
    throw new CorruptImageError(`${name}: content hash is ${id.slice(0, 16)}…, not the chunk's name`, { hint: 'run `stillpoint verify --deep` to list every damaged restore point' });
  }
}

function reply(message: WorkerReply, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

/** A Buffer's bytes as an ArrayBuffer of exactly that length that can be transferred. */
function toOwnedArrayBuffer(buf: Buffer): ArrayBuffer {
  if (buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength && buf.buffer instanceof ArrayBuffer) {
    return buf.buffer;
  }
  const out = new ArrayBuffer(buf.byteLength);
  new Uint8Array(out).set(buf);
  return out;
}
