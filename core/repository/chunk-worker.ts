/**
 * A chunk worker (worker_threads): hashes, compresses and encrypts chunks for a backup, and
 * decrypts, decompresses and re-hashes them for a restore or a deep verify, off the main thread.
 * Started by `ChunkWorkers` (workers.ts); speaks only in messages.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { BlobCodec, chunkId, isAllZero, type RepositoryKeys } from './codec.ts';
import type { WorkerInit, WorkerReply, WorkerTask } from './workers.ts';

const init = workerData as WorkerInit;
let keys: RepositoryKeys | null = null;
let codec = new BlobCodec({ keys, compressionLevel: init.compressionLevel });
const port = parentPort!;

port.on('message', (task: WorkerTask) => {
  if (task.op === 'keys') {
    keys = task.keys ? { encKey: Buffer.from(task.keys.encKey), idKey: Buffer.from(task.keys.idKey) } : null;
    codec = new BlobCodec({ keys, compressionLevel: init.compressionLevel });
    return;
  }
  try {
    if (task.op === 'seal') {
      const data = new Uint8Array(task.buf, 0, task.length);
      if (isAllZero(data)) {
        reply({ seq: task.seq, ok: true, id: null, blob: null, buf: task.buf }, [task.buf]);
        return;
      }
      const id = chunkId(data, keys);
      // The blob's name is its storage key, `chunks/<xx>/<id>` (format.ts `keys.chunk`; not imported, to keep the worker light).
      // Written over the chunk (no longer needed) in the buffer that goes back anyway: no new
      // buffer crosses to the main thread per chunk, so its garbage collector has little to do.
      const sealed = codec.seal(`chunks/${id.slice(0, 2)}/${id}`, data, new Uint8Array(task.buf));
      if (sealed.buffer === task.buf) {
        reply({ seq: task.seq, ok: true, id, blob: null, blobLength: sealed.byteLength, buf: task.buf }, [task.buf]);
        return;
      }
      const blob = toOwnedArrayBuffer(sealed);
      reply({ seq: task.seq, ok: true, id, blob, buf: task.buf }, [task.buf, blob]);
    } else {
      const data = codec.open(task.name, new Uint8Array(task.blob), task.out ? new Uint8Array(task.out) : undefined);
      if (task.expectId !== null) {
        const id = chunkId(data, keys);
        if (id !== task.expectId) {
          reply({ seq: task.seq, ok: false, error: `${task.name}: content hash is ${id.slice(0, 16)}…, not the chunk's name. run \`stillpoint verify --deep\` to list every damaged restore point`, corrupt: true });
          return;
        }
      }
      if (task.out && data.buffer === task.out) {
        reply({ seq: task.seq, ok: true, id: task.expectId, blob: null, blobLength: data.byteLength, buf: task.out }, [task.out]);
        return;
      }
      const out = toOwnedArrayBuffer(data);
      reply({ seq: task.seq, ok: true, id: task.expectId, blob: out, buf: null }, [out]);
    }
  } catch (error) {
    const e = error as Error;
    reply({ seq: task.seq, ok: false, error: e.message, corrupt: e.name === 'CorruptImageError' });
  }
});

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
