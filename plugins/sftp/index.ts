import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../../core/errors.ts';
import type { StorageTarget } from '../../core/contracts/storage.ts';
import { definePlugin } from '../../core/plugin.ts';
import { readSecret, SftpStorage } from './storage.ts';

export { SftpStorage } from './storage.ts';
export { checkKnownHosts, fingerprint } from './host-key.ts';

/**
 * `repository.storage.options` when `type` is "sftp". Secrets come from files or environment
 * variables, never from the config itself.
 */
export const sftpStorageOptionsSchema = z.object({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(22),
  username: z.string().min(1),
  /** Absolute remote directory of the repository. */
  path: z.string().regex(/^\//, 'must be an absolute remote path'),
  privateKeyFile: z.string().optional(),
  privateKeyEnv: z.string().optional(),
  privateKeyPassphraseEnv: z.string().optional(),
  passwordFile: z.string().optional(),
  passwordEnv: z.string().optional(),
  /** known_hosts file (default ~/.ssh/known_hosts when no fingerprint is given). */
  knownHostsFile: z.string().optional(),
  /** Trusted host key fingerprint(s), as `ssh-keygen -lf` prints them: "SHA256:...". */
  hostKeyFingerprint: z.union([z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/), z.array(z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/))]).optional(),
  connectTimeoutMs: z.number().int().positive().default(20_000),
  operationTimeoutMs: z.number().int().positive().default(120_000),
}).strict();
export type SftpStorageConfig = z.output<typeof sftpStorageOptionsSchema>;

/** Build an SFTP storage target from its options, reading secrets and known_hosts from files / the environment. */
export async function createSftpStorage(raw: unknown, context: { configDir: string; env?: NodeJS.ProcessEnv }): Promise<SftpStorage> {
  const parsed = sftpStorageOptionsSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `repository.storage.options.${i.path.join('.')}: ${i.message}`));
  }
  const o = parsed.data;
  const env = context.env ?? process.env;
  const resolve = (p: string) => (isAbsolute(p) ? p : join(context.configDir, p));
  const privateKey = await readSecret(o.privateKeyFile && resolve(o.privateKeyFile), o.privateKeyEnv, env, 'private key');
  const password = await readSecret(o.passwordFile && resolve(o.passwordFile), o.passwordEnv, env, 'password');
  const privateKeyPassphrase = await readSecret(undefined, o.privateKeyPassphraseEnv, env, 'private key passphrase');
  const fingerprints = o.hostKeyFingerprint === undefined ? [] : [o.hostKeyFingerprint].flat();
  let knownHosts: string | undefined;
  const khFile = o.knownHostsFile ? resolve(o.knownHostsFile) : fingerprints.length === 0 ? join(homedir(), '.ssh', 'known_hosts') : undefined;
  if (khFile) {
    try {
      knownHosts = await readFile(khFile, 'utf8');
    } catch (cause) {
      throw new ConfigError([`repository.storage.options.knownHostsFile: cannot read ${khFile}: ${(cause as Error).message} (or set hostKeyFingerprint)`]);
    }
  }
  return new SftpStorage({
    host: o.host,
    port: o.port,
    username: o.username,
    path: o.path.replace(/\/+$/, '') || '/',
    privateKey,
    privateKeyPassphrase,
    password,
    knownHosts,
    fingerprints,
    connectTimeoutMs: o.connectTimeoutMs,
    operationTimeoutMs: o.operationTimeoutMs,
  });
}

/**
 * A storage target that connects lazily: `resolveStorage` is synchronous, while reading the
 * key and known_hosts files is not, so the first operation finishes building the target.
 */
class LazySftpStorage implements StorageTarget {
  readonly name: string;
  private inner: Promise<SftpStorage> | null = null;
  constructor(private readonly raw: Record<string, unknown>, private readonly configDir: string) {
    this.name = `sftp:${String(raw.username ?? '?')}@${String(raw.host ?? '?')}`;
    // Validate now so a bad config fails at start-up, not at the first put.
    const parsed = sftpStorageOptionsSchema.safeParse(raw);
    if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => `repository.storage.options.${i.path.join('.')}: ${i.message}`));
  }
  private target(): Promise<SftpStorage> {
    this.inner ??= createSftpStorage(this.raw, { configDir: this.configDir });
    this.inner.catch(() => { this.inner = null; });
    return this.inner;
  }
  async put(key: string, data: Buffer) { return (await this.target()).put(key, data); }
  async get(key: string) { return (await this.target()).get(key); }
  async getRange(key: string, offset: number, length: number) { return (await this.target()).getRange(key, offset, length); }
  async head(key: string) { return (await this.target()).head(key); }
  async *list(prefix: string) { yield* (await this.target()).list(prefix); }
  async delete(key: string) { return (await this.target()).delete(key); }
  async close() { if (this.inner) await (await this.inner.catch(() => null))?.close(); }
}

/** The SFTP storage target: serves `repository.storage` entries of type "sftp". */
export default definePlugin('sftp', z.object({}).strict().default({}), (_options, context) => ({
  name: 'sftp',
  apply(engine) {
    engine.hooks.resolveStorage.tap('sftp', (spec) => (spec.type === 'sftp' ? new LazySftpStorage(spec.options, context.configDir) : undefined));
  },
}));
