import { createCipheriv, createDecipheriv, randomBytes, scrypt as scryptCb } from 'node:crypto';
import { StillpointError } from '../errors.ts';
import type { RepositoryKeys } from './codec.ts';
import { keyFileSchema, type KeyFile } from './format.ts';

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/** scrypt cost: 2^16 x 8 = 64 MiB of memory and about 0.2 s (restic calibrates to a similar 60 MiB). */
export const defaultScrypt: ScryptParams = { N: 2 ** 16, r: 8, p: 1 };

function scrypt(passphrase: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(passphrase, salt, 32, { ...params, maxmem: 256 * params.N * params.r + 32 * 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

function aad(repositoryId: string): Buffer {
  return Buffer.from(`stillpoint-key-v1:${repositoryId}`, 'utf8');
}

/** New random key material and its key file, wrapped with a key derived from `passphrase`. */
export async function createKeyFile(
  repositoryId: string,
  passphrase: string,
  params: ScryptParams = defaultScrypt,
): Promise<{ keys: RepositoryKeys; file: KeyFile }> {
  const keys: RepositoryKeys = { encKey: randomBytes(32), idKey: randomBytes(32) };
  const salt = randomBytes(16);
  const kek = await scrypt(passphrase, salt, params);
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', kek, nonce);
  cipher.setAAD(aad(repositoryId));
  const body = Buffer.concat([cipher.update(Buffer.concat([keys.encKey, keys.idKey])), cipher.final()]);
  const wrapped = Buffer.concat([nonce, body, cipher.getAuthTag()]).toString('base64');
  const file: KeyFile = {
    format: 'stillpoint-key',
    version: 1,
    createdAt: new Date().toISOString(),
    kdf: { name: 'scrypt', ...params, salt: salt.toString('base64') },
    wrapped,
  };
  return { keys, file };
}

/** Unwrap a key file with `passphrase`; null when the passphrase does not open it. */
export async function openKeyFile(repositoryId: string, raw: unknown, passphrase: string, where: string): Promise<RepositoryKeys | null> {
  const parsed = keyFileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new StillpointError(`key file is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, { where });
  }
  const file = parsed.data;
  const kek = await scrypt(passphrase, Buffer.from(file.kdf.salt, 'base64'), file.kdf);
  const wrapped = Buffer.from(file.wrapped, 'base64');
  const decipher = createDecipheriv('aes-256-gcm', kek, wrapped.subarray(0, 12));
  decipher.setAAD(aad(repositoryId));
  decipher.setAuthTag(wrapped.subarray(wrapped.length - 16));
  try {
    const plain = Buffer.concat([decipher.update(wrapped.subarray(12, wrapped.length - 16)), decipher.final()]);
    return { encKey: plain.subarray(0, 32), idKey: plain.subarray(32, 64) };
  } catch {
    return null;
  }
}
