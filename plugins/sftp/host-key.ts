import { createHash, createHmac } from 'node:crypto';

/** SHA256 fingerprint of a host key as OpenSSH prints it: "SHA256:" + unpadded base64. */
export function fingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** How known_hosts names a host: "host" on port 22, else "[host]:port". */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function hostMatches(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash;
  }
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(name);
}

export type HostKeyCheck =
  | { ok: true }
  | { ok: false; reason: 'unknown' | 'changed' | 'revoked' };

/**
 * Check a server's host key against the text of a known_hosts file (plain and hashed names,
 * patterns, negations, @revoked; @cert-authority lines are not used). A host listed with other
 * keys only is "changed"; a host not listed is "unknown".
 */
export function checkKnownHosts(text: string, host: string, port: number, key: Buffer): HostKeyCheck {
  const name = knownHostsName(host, port);
  const keyB64 = key.toString('base64');
  let listed = false;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let fields = line.split(/\s+/);
    let marker: string | null = null;
    if (fields[0].startsWith('@')) {
      marker = fields[0];
      fields = fields.slice(1);
    }
    if (fields.length < 3 || marker === '@cert-authority') continue;
    const patterns = fields[0].split(',');
    const negated = patterns.some((p) => p.startsWith('!') && hostMatches(p.slice(1), name));
    if (negated || !patterns.some((p) => !p.startsWith('!') && hostMatches(p, name))) continue;
    if (marker === '@revoked') {
      if (fields[2] === keyB64) return { ok: false, reason: 'revoked' };
      continue;
    }
    listed = true;
    if (fields[2] === keyB64) return { ok: true };
  }
  return { ok: false, reason: listed ? 'changed' : 'unknown' };
}
