import { randomBytes } from 'node:crypto';
import { mkdir, open, opendir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import createDebug from 'debug';
import type { StorageTarget } from '../../core/contracts/storage.ts';
import { NotFoundError } from '../../core/errors.ts';
import { openDirectFile } from '../../core/util/direct-io.ts';
import { syncDir } from '../../core/util/durable.ts';
import { assertValidKey, assertValidPrefix, storageError } from '../../core/repository/storage-util.ts';

const debug = createDebug('stillpoint:local');

/** Temporary files carry `~`, which no key may contain, so `list` never shows them. */
const TMP_MARK = '~tmp~';
/** Objects at least this large (pack files) are written around the page cache (core/util/direct-io.ts). */
const DIRECT_MIN = 1024 * 1024;

/**
 * A storage target on a local (or mounted) filesystem. Each key is a file under `root`.
 * `put` writes a temporary file in the same directory, fsyncs it, renames it over the key and
 * fsyncs the directory, so it is atomic and durable. Files are created mode 0600, directories 0700.
 * Large objects are written with direct I/O where the filesystem allows it.
 */
export class LocalStorage implements StorageTarget {
  readonly name: string;
  private readonly knownDirs = new Set<string>();

  constructor(readonly root: string) {
    this.name = `local:${root}`;
  }

  private path(key: string): string {
    assertValidKey(key, this.name);
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, data: Buffer): Promise<void> {
    const path = this.path(key);
    const dir = dirname(path);
    await this.ensureDir(dir);
    const tmp = `${path}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    try {
      // Large objects (packs) go around the page cache: written once, read back rarely.
      const direct = data.length >= DIRECT_MIN ? await openDirectFile(tmp, { exclusive: true, mode: 0o600 }) : null;
      const handle = direct ?? (await open(tmp, 'wx', 0o600));
      try {
        if (direct) {
          await direct.write(0, data);
        } else {
          let done = 0;
          while (done < data.length) done += (await (handle as FileHandle).write(data, done, data.length - done)).bytesWritten;
        }
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(tmp, path);
      await syncDir(dir);
    } catch (error) {
      await unlink(tmp).catch(() => undefined);
      throw storageError(error, `put ${key}`, join(this.root, key));
    }
  }

  async get(key: string): Promise<Buffer> {
    const path = this.path(key);
    try {
      const handle = await open(path, 'r');
      try {
        const { size } = await handle.stat();
        const buf = Buffer.allocUnsafe(size);
        let done = 0;
        while (done < size) {
          const { bytesRead } = await handle.read(buf, done, size - done, done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return done === size ? buf : buf.subarray(0, done);
      } finally {
        await handle.close();
      }
    } catch (error) {
      throw storageError(error, `get ${key}`, path);
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    const path = this.path(key);
    try {
      const handle = await open(path, 'r');
      try {
        const buf = Buffer.allocUnsafe(length);
        let done = 0;
        while (done < length) {
          const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return buf.subarray(0, done);
      } finally {
        await handle.close();
      }
    } catch (error) {
      throw storageError(error, `get ${key}`, path);
    }
  }

  async head(key: string): Promise<{ size: number } | null> {
    const path = this.path(key);
    try {
      const s = await stat(path);
      return s.isFile() ? { size: s.size } : null;
    } catch (error) {
      const e = storageError(error, `head ${key}`, path);
      if (e instanceof NotFoundError || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw e;
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    assertValidPrefix(prefix, this.name);
    // Walk the deepest directory that the prefix names completely, then filter.
    const cut = prefix.lastIndexOf('/');
    const dirKey = cut >= 0 ? prefix.slice(0, cut) : '';
    const start = dirKey ? join(this.root, ...dirKey.split('/')) : this.root;
    const stack: Array<{ dir: string; key: string }> = [{ dir: start, key: dirKey }];
    while (stack.length > 0) {
      const { dir, key } = stack.pop()!;
      let handle;
      try {
        handle = await opendir(dir);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') continue;
        throw storageError(error, `list ${prefix}`, dir);
      }
      for await (const entry of handle) {
        if (entry.name.includes(TMP_MARK)) continue;
        const childKey = key ? `${key}/${entry.name}` : entry.name;
        if (entry.isDirectory()) {
          if (childKey.startsWith(prefix) || prefix.startsWith(`${childKey}/`)) stack.push({ dir: join(dir, entry.name), key: childKey });
        } else if (entry.isFile() && childKey.startsWith(prefix)) {
          yield childKey;
        }
      }
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    try {
      await rm(path, { force: true });
    } catch (error) {
      throw storageError(error, `delete ${key}`, path);
    }
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.knownDirs.has(dir)) return;
    // Find the deepest existing ancestor, then create each missing level (so that the real
    // error, e.g. EROFS or EACCES, is reported) and make each new entry durable.
    const missing: string[] = [];
    let d = dir;
    for (;;) {
      try {
        const s = await stat(d);
        if (!s.isDirectory()) throw Object.assign(new Error(`${d} is not a directory`), { code: 'ENOTDIR' });
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw storageError(error, 'create directory', d);
        missing.push(d);
        const parent = dirname(d);
        if (parent === d) break;
        d = parent;
      }
    }
    for (const m of missing.reverse()) {
      try {
        await mkdir(m, { mode: 0o700 });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw storageError(error, 'create directory', m);
      }
      await syncDir(dirname(m));
      debug('created %s', m);
    }
    this.knownDirs.add(dir);
  }
}

