/**
 * Host key checking for the SSH channel: OpenSSH known_hosts files (plain and hashed host names,
 * `[host]:port`, wildcards, negation, @revoked) and SHA256 fingerprints as `ssh-keygen -lf` prints them.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export interface KnownHostEntry {
  marker?: '@revoked' | '@cert-authority';
  hostPatterns: string;
  keyType: string;
  key: Buffer;
  line: number;
}

/** `SHA256:<base64 without padding>` of an SSH public key blob. */
export function fingerprintOf(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** The key type named inside an SSH public key blob ("ssh-ed25519", "ssh-rsa", ...). */
export function keyTypeOf(key: Buffer): string {
  if (key.length < 4) return 'unknown';
  const length = key.readUInt32BE(0);
  return key.subarray(4, 4 + length).toString('latin1');
}

export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry['marker'];
    if (fields[0] === '@revoked' || fields[0] === '@cert-authority') marker = fields.shift() as KnownHostEntry['marker'];
    if (fields.length < 3) return;
    const key = Buffer.from(fields[2], 'base64');
    if (key.length === 0) return;
    entries.push({ marker, hostPatterns: fields[0], keyType: fields[1], key, line: index + 1 });
  });
  return entries;
}

/** How OpenSSH names a host in known_hosts: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function wildcardMatch(pattern: string, name: string): boolean {
  const regex = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
  return regex.test(name);
}

function hashedMatch(pattern: string, name: string): boolean {
  const [, kind, salt, hash] = pattern.split('|');
  if (kind !== '1' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/** Whether an entry's host field names `host`:`port` (a negated pattern that matches excludes the entry). */
export function hostMatches(hostPatterns: string, host: string, port: number): boolean {
  const name = knownHostsName(host, port);
  if (hostPatterns.startsWith('|')) return hashedMatch(hostPatterns, name);
  let matched = false;
  for (const pattern of hostPatterns.split(',')) {
    const negated = pattern.startsWith('!');
    const body = negated ? pattern.slice(1) : pattern;
    if (wildcardMatch(body, name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

export type HostKeyVerdict =
  | { ok: true }
  | { ok: false; problem: 'unknown' | 'changed' | 'revoked'; knownTypes: string[] };

/** Check a presented host key against known_hosts entries. */
export function checkKnownHosts(entries: KnownHostEntry[], host: string, port: number, key: Buffer): HostKeyVerdict {
  const forHost = entries.filter((e) => e.marker !== '@cert-authority' && hostMatches(e.hostPatterns, host, port));
  if (entries.some((e) => e.marker === '@revoked' && e.key.equals(key))) {
    return { ok: false, problem: 'revoked', knownTypes: [] };
  }
  const plain = forHost.filter((e) => e.marker === undefined);
  if (plain.some((e) => e.key.equals(key))) return { ok: true };
  const type = keyTypeOf(key);
  return {
    ok: false,
    problem: plain.some((e) => e.keyType === type) ? 'changed' : 'unknown',
    knownTypes: [...new Set(plain.map((e) => e.keyType))],
  };
}

/** The host key types known_hosts lists for a host (to ask the server for those first). */
export function knownKeyTypes(entries: KnownHostEntry[], host: string, port: number): string[] {
  return [
    ...new Set(entries.filter((e) => e.marker === undefined && hostMatches(e.hostPatterns, host, port)).map((e) => e.keyType)),
  ];
}
