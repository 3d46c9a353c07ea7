import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import createDebug from 'debug';
import { Client, type ConnectConfig, type SFTPWrapper } from 'ssh2';
import type { StorageTarget } from '../../core/contracts/storage.ts';
import { ConfigError, NotFoundError, StillpointError, TransientError } from '../../core/errors.ts';
import { assertValidKey, assertValidPrefix } from '../../core/repository/storage-util.ts';
import { checkKnownHosts, fingerprint, knownHostsName } from './host-key.ts';

const debug = createDebug('stillpoint:sftp');

/** Temporary files carry `~`, which no key may contain, so `list` never shows them. */
const TMP_MARK = '~tmp~';
const PIECE = 64 * 1024;

/** SFTP status codes (draft-ietf-secsh-filexfer-02). */
const SFTP_NO_SUCH_FILE = 2;
const SFTP_PERMISSION_DENIED = 3;

export interface SftpStorageOptions {
  host: string;
  port: number;
  username: string;
  /** Remote directory of the repository. */
  path: string;
  /** Credentials, already read from files or the environment (never from the config in clear). */
  privateKey?: Buffer | string;
  privateKeyPassphrase?: string;
  password?: string;
  /** Trusted host keys: the text of a known_hosts file, and/or SHA256 fingerprints. */
  knownHosts?: string;
  fingerprints?: string[];
  connectTimeoutMs: number;
  operationTimeoutMs: number;
}

interface Session {
  client: Client;
  sftp: SFTPWrapper;
  closed: boolean;
  /** Calls in flight: each is failed when the connection closes. */
  pending: Set<() => void>;
}

/**
 * A storage target over SFTP (ssh2). The server's host key must be in the configured
 * known_hosts text or match a configured fingerprint: an unknown or changed key is refused.
 * `put` writes a temporary file, fsyncs it (fsync@openssh.com), and renames it over the key
 * (posix-rename@openssh.com), so it is atomic and durable. A dropped connection fails the
 * operation with TransientError; the next operation connects again.
 */
export class SftpStorage implements StorageTarget {
  readonly name: string;
  private session: Promise<Session> | null = null;
  private readonly knownDirs = new Set<string>();

  constructor(readonly options: SftpStorageOptions) {
    if (!options.knownHosts && !(options.fingerprints?.length)) {
      throw new ConfigError(['sftp: give knownHostsFile or hostKeyFingerprint: Stillpoint does not trust a server it cannot identify']);
    }
    if (!options.privateKey && options.password === undefined) {
      throw new ConfigError(['sftp: give a private key (privateKeyFile / privateKeyEnv) or a password (passwordFile / passwordEnv)']);
    }
    this.name = `sftp:${options.username}@${options.host}:${options.port}${options.path}`;
  }

  // ---- connection --------------------------------------------------------------------------

  private connect(): Promise<Session> {
    const o = this.options;
    return new Promise<Session>((resolve, reject) => {
      const client = new Client();
      let refusal: StillpointError | null = null;
      const where = `${o.host}:${o.port}`;
      const config: ConnectConfig = {
        host: o.host,
        port: o.port,
        username: o.username,
        privateKey: o.privateKey,
        passphrase: o.privateKeyPassphrase,
        password: o.password,
        readyTimeout: o.connectTimeoutMs,
        keepaliveInterval: 15_000,
        keepaliveCountMax: 4,
        hostVerifier: (key: Buffer) => {
          const fp = fingerprint(key);
          if (o.fingerprints?.includes(fp)) return true;
          if (o.knownHosts) {
            const check = checkKnownHosts(o.knownHosts, o.host, o.port, key);
            if (check.ok) return true;
            refusal = new StillpointError(
              check.reason === 'changed'
                ? `the server's host key CHANGED (now ${fp}): refusing to connect (a reinstalled server, or someone in the middle)`
                : check.reason === 'revoked'
                  ? `the server's host key ${fp} is revoked in known_hosts`
                  : `the server's host key ${fp} is unknown (${knownHostsName(o.host, o.port)} is not in known_hosts)`,
              { where, hint: `check the key with the server's administrator, then add it to known_hosts or set hostKeyFingerprint to ${fp}` },
            );
          } else {
            refusal = new StillpointError(`the server's host key ${fp} does not match the configured fingerprint(s) ${o.fingerprints!.join(', ')}: refusing to connect`, {
              where,
              hint: 'check the key with the server\'s administrator and update hostKeyFingerprint',
            });
          }
          return false;
        },
      };
      client.once('ready', () => {
        // Many small requests: without this, Nagle's algorithm and delayed ACKs add ~40 ms to each.
        client.setNoDelay(true);
        client.sftp((err, sftp) => {
          if (err) {
            client.end();
            reject(new TransientError(`cannot start the SFTP subsystem: ${err.message}`, { where, cause: err }));
            return;
          }
          const session: Session = { client, sftp, closed: false, pending: new Set() };
          client.on('close', () => {
            session.closed = true;
            debug('connection to %s closed', where);
            for (const fail of [...session.pending]) fail();
          });
          resolve(session);
        });
      });
      client.once('error', (err: Error & { level?: string }) => {
        client.end();
        if (refusal) reject(refusal);
        else if (err.level === 'client-authentication') {
          reject(new StillpointError(`authentication as ${o.username} failed`, { where, hint: 'check the private key or password and the server\'s authorized_keys', cause: err }));
        } else reject(new TransientError(`cannot connect: ${err.message}`, { where, cause: err }));
      });
      client.connect(config);
    });
  }

  /** The live session; one connection at a time, even when many calls find it dropped at once. */
  private async sftp(): Promise<Session> {
    for (;;) {
      const current = this.session;
      if (!current) break;
      const s = await current.catch(() => null);
      if (s && !s.closed) return s;
      if (this.session === current) {
        this.session = null;
        break;
      }
      // Another caller already started a new connection: use that one.
    }
    const connecting = this.connect();
    this.session = connecting;
    connecting.catch(() => {
      if (this.session === connecting) this.session = null;
    });
    return connecting;
  }

  /** Run one SFTP call with a timeout; errors are mapped to the contract's errors. */
  private async call<T>(op: string, path: string, fn: (sftp: SFTPWrapper, done: (err: Error | null | undefined, value?: T) => void) => void): Promise<T> {
    const session = await this.sftp();
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        session.closed = true;
        session.client.end();
        reject(new TransientError(`${op}: no answer within ${this.options.operationTimeoutMs} ms`, { where: this.where(path) }));
      }, this.options.operationTimeoutMs);
      const onClose = () => {
        session.pending.delete(onClose);
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new TransientError(`${op}: the connection was closed`, { where: this.where(path) }));
      };
      session.pending.add(onClose);
      try {
        fn(session.sftp, (err, value) => {
          session.pending.delete(onClose);
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (err) reject(this.mapError(err, op, path, session));
          else resolve(value as T);
        });
      } catch (error) {
        session.pending.delete(onClose);
        settled = true;
        clearTimeout(timer);
        reject(this.mapError(error as Error, op, path, session));
      }
    });
  }

  private mapError(err: Error & { code?: number | string }, op: string, path: string, session: Session): Error {
    const where = this.where(path);
    if (err.code === SFTP_NO_SUCH_FILE) return new NotFoundError(`${op}: no such object`, { where, cause: err });
    if (err.code === SFTP_PERMISSION_DENIED) return new StillpointError(`${op}: permission denied`, { where, hint: 'check the remote directory\'s owner and mode', cause: err });
    if (typeof err.code === 'number') {
      const full = /quota|space|full/i.test(err.message);
      return new StillpointError(`${op}: ${full ? 'the server is out of space: ' : ''}${err.message}`, {
        where,
        hint: full ? 'free space or prune old restore points, then run the backup again' : undefined,
        cause: err,
      });
    }
    if (session.closed || /No response|Not connected|closed|ECONNRESET|EPIPE|ETIMEDOUT/i.test(`${err.message} ${err.code ?? ''}`)) {
      session.closed = true;
      return new TransientError(`${op}: ${err.message}`, { where, cause: err });
    }
    return new StillpointError(`${op}: ${err.message}`, { where, cause: err });
  }

  private where(path: string): string {
    return `sftp://${this.options.username}@${this.options.host}:${this.options.port}${path}`;
  }

  private remote(key: string): string {
    assertValidKey(key, this.name);
    return posix.join(this.options.path, key);
  }

  // ---- the contract ------------------------------------------------------------------------

  async put(key: string, data: Buffer): Promise<void> {
    const path = this.remote(key);
    const dir = posix.dirname(path);
    await this.ensureDir(dir);
    const tmp = `${path}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    const handle = await this.call<Buffer>('put', path, (s, done) => s.open(tmp, 'w', { mode: 0o600 }, done));
    let closed = false;
    try {
      const pieces: number[] = [];
      for (let off = 0; off < data.length; off += PIECE) pieces.push(off);
      let next = 0;
      await Promise.all(Array.from({ length: Math.min(16, pieces.length) }, async () => {
        while (next < pieces.length) {
          const off = pieces[next++];
          const len = Math.min(PIECE, data.length - off);
          await this.call<void>('put', path, (s, done) => s.write(handle, data, off, len, off, (err) => done(err)));
        }
      }));
      await this.call<void>('put (fsync)', path, (s, done) => s.ext_openssh_fsync(handle, (err) => done(err)));
      closed = true;
      await this.call<void>('put', path, (s, done) => s.close(handle, (err) => done(err)));
      await this.call<void>('put (rename)', path, (s, done) => s.ext_openssh_rename(tmp, path, (err) => done(err)));
    } catch (error) {
      if (!closed) await this.call<void>('put', path, (s, done) => s.close(handle, (err) => done(err))).catch(() => undefined);
      await this.call<void>('put', tmp, (s, done) => s.unlink(tmp, (err) => done(err))).catch(() => undefined);
      throw error;
    }
  }

  async get(key: string): Promise<Buffer> {
    const path = this.remote(key);
    return this.readRange(path, 0, null);
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.readRange(this.remote(key), offset, length);
  }

  private async readRange(path: string, offset: number, length: number | null): Promise<Buffer> {
    const handle = await this.call<Buffer>('get', path, (s, done) => s.open(path, 'r', done));
    try {
      const stats = await this.call<{ size: number }>('get', path, (s, done) => s.fstat(handle, done));
      const end = length === null ? stats.size : Math.min(stats.size, offset + length);
      const size = Math.max(0, end - offset);
      const buf = Buffer.allocUnsafe(size);
      const pieces: number[] = [];
      for (let off = 0; off < size; off += PIECE) pieces.push(off);
      let next = 0;
      let short = size;
      await Promise.all(Array.from({ length: Math.min(16, pieces.length) }, async () => {
        while (next < pieces.length) {
          const off = pieces[next++];
          const len = Math.min(PIECE, size - off);
          let got = 0;
          while (got < len) {
            const n = await this.call<number>('get', path, (s, done) => s.read(handle, buf, off + got, len - got, offset + off + got, (err, bytes) => done(err, bytes)));
            if (n === 0) {
              short = Math.min(short, off + got);
              break;
            }
            got += n;
          }
        }
      }));
      return short < size ? buf.subarray(0, short) : buf;
    } finally {
      await this.call<void>('get', path, (s, done) => s.close(handle, (err) => done(err))).catch(() => undefined);
    }
  }

  async head(key: string): Promise<{ size: number } | null> {
    const path = this.remote(key);
    try {
      const st = await this.call<{ size: number; isFile(): boolean }>('head', path, (s, done) => s.stat(path, done));
      return st.isFile() ? { size: st.size } : null;
    } catch (error) {
      if (error instanceof NotFoundError) return null;
      throw error;
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    assertValidPrefix(prefix, this.name);
    const cut = prefix.lastIndexOf('/');
    const dirKey = cut >= 0 ? prefix.slice(0, cut) : '';
    const stack: string[] = [dirKey];
    while (stack.length > 0) {
      const key = stack.pop()!;
      const dir = key ? posix.join(this.options.path, key) : this.options.path;
      let entries: Array<{ filename: string; attrs: { isDirectory(): boolean; isFile(): boolean } }>;
      try {
        entries = await this.call('list', dir, (s, done) => s.readdir(dir, done));
      } catch (error) {
        if (error instanceof NotFoundError) continue;
        throw error;
      }
      for (const entry of entries) {
        if (entry.filename.includes(TMP_MARK) || entry.filename === '.' || entry.filename === '..') continue;
        const childKey = key ? `${key}/${entry.filename}` : entry.filename;
        if (entry.attrs.isDirectory()) {
          if (childKey.startsWith(prefix) || prefix.startsWith(`${childKey}/`)) stack.push(childKey);
        } else if (entry.attrs.isFile() && childKey.startsWith(prefix)) {
          yield childKey;
        }
      }
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.remote(key);
    try {
      await this.call<void>('delete', path, (s, done) => s.unlink(path, (err) => done(err)));
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
    }
  }

  async close(): Promise<void> {
    const s = this.session ? await this.session.catch(() => null) : null;
    this.session = null;
    if (s && !s.closed) {
      s.closed = true;
      s.client.end();
    }
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.knownDirs.has(dir)) return;
    const missing: string[] = [];
    let d = dir;
    for (;;) {
      try {
        const st = await this.call<{ isDirectory(): boolean }>('create directory', d, (s, done) => s.stat(d, done));
        if (!st.isDirectory()) throw new StillpointError('is not a directory', { where: this.where(d) });
        break;
      } catch (error) {
        if (!(error instanceof NotFoundError)) throw error;
        missing.push(d);
        const parent = posix.dirname(d);
        if (parent === d) break;
        d = parent;
      }
    }
    for (const m of missing.reverse()) {
      try {
        await this.call<void>('create directory', m, (s, done) => s.mkdir(m, { mode: 0o700 }, (err) => done(err)));
      } catch (error) {
        // Another put may have made it meanwhile.
        const st = await this.call<{ isDirectory(): boolean }>('create directory', m, (s, done) => s.stat(m, done)).catch(() => null);
        if (!st?.isDirectory()) throw error;
      }
    }
    this.knownDirs.add(dir);
  }
}

/** Read a secret from a file (trailing newline removed) or an environment variable. */
export async function readSecret(file: string | undefined, env: string | undefined, environment: NodeJS.ProcessEnv, what: string): Promise<string | undefined> {
  if (file) {
    try {
      return (await readFile(file, 'utf8')).replace(/\r?\n$/, '');
    } catch (cause) {
      throw new ConfigError([`repository.storage.options: cannot read the ${what} file ${file}: ${(cause as Error).message}`]);
    }
  }
  if (env) {
    const value = environment[env];
    if (value === undefined || value === '') throw new ConfigError([`repository.storage.options: the environment variable ${env} (${what}) is not set`]);
    return value;
  }
  return undefined;
}
