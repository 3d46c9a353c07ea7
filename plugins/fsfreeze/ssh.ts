/**
 * The SSH channel: an agentless Linux guest reached over SSH. The guest's host key is always
 * checked (known_hosts or a configured SHA256 fingerprint); an unknown key is refused.
 *
 * One SSH connection is kept for the whole freeze (opening a new session on a frozen guest can
 * hang: sshd and PAM write to /var). The watchdog runs on the guest, detached with setsid, so it
 * thaws at the deadline even when Stillpoint or the connection dies.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import createDebug from 'debug';
import ssh2 from 'ssh2';
import { ConfigError, StillpointError, TransientError } from '../../core/errors.ts';
import type { ArmedWatchdog, FreezeResult, GuestChannel, MountTable, ScriptResult, ThawReport } from './channel.ts';
import { freezeInOrder, thawInReverse, type CommandOutcome } from './fsfreeze-command.ts';
import { checkKnownHosts, fingerprintOf, keyTypeOf, knownKeyTypes, parseKnownHosts, type KnownHostEntry } from './known-hosts.ts';
import { parseMountInfo, type FreezeTarget } from './mounts.ts';
import type { SshChannelOptions } from './options.ts';

const debug = createDebug('stillpoint:fsfreeze:ssh');

/** The guest presented a host key that is not the one configured. */
export class SshHostKeyError extends StillpointError {
  readonly fingerprint: string;
  constructor(message: string, options: { where: string; hint: string; fingerprint: string }) {
    super(message, options);
    this.fingerprint = options.fingerprint;
  }
}

/** Quote for a POSIX shell. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

const HOST_KEY_ALGORITHMS: Record<string, string[]> = {
  'ssh-ed25519': ['ssh-ed25519'],
  'ecdsa-sha2-nistp256': ['ecdsa-sha2-nistp256'],
  'ecdsa-sha2-nistp384': ['ecdsa-sha2-nistp384'],
  'ecdsa-sha2-nistp521': ['ecdsa-sha2-nistp521'],
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
};

async function secret(
  fileOption: string | undefined,
  envOption: string | undefined,
  configDir: string,
  where: string,
  what: string,
): Promise<string | undefined> {
  if (fileOption) {
    const file = path.resolve(configDir, fileOption);
    try {
      return await readFile(file, 'utf8');
    } catch (error) {
      throw new ConfigError([`cannot read the ${what} file ${file}: ${(error as Error).message}`], { where });
    }
  }
  if (envOption) {
    const value = process.env[envOption];
    if (!value) throw new ConfigError([`environment variable ${envOption} (the ${what}) is not set or empty`], { where });
    return value;
  }
  return undefined;
}

export interface ExecOutcome extends CommandOutcome {
  stdout: string;
}

export class SshChannel implements GuestChannel {
  readonly description: string;

  private constructor(
    private readonly client: ssh2.Client,
    private readonly options: SshChannelOptions,
    private readonly where: string,
  ) {
    this.description = `ssh ${options.user}@${options.host}:${options.port}`;
  }

  /** Connect, verifying the host key; `where` names the guest in errors. */
  static async connect(options: SshChannelOptions, configDir: string, where: string): Promise<SshChannel> {
    const privateKey = await secret(options.keyFile, options.keyEnv, configDir, `${where}.channel.keyFile`, 'private key');
    const passphrase = await secret(options.passphraseFile, options.passphraseEnv, configDir, `${where}.channel.passphraseFile`, 'key passphrase');
    let knownHosts: KnownHostEntry[] | undefined;
    let knownHostsPath: string | undefined;
    if (options.knownHostsFile) {
      knownHostsPath = path.resolve(configDir, options.knownHostsFile);
      try {
        knownHosts = parseKnownHosts(await readFile(knownHostsPath, 'utf8'));
      } catch (error) {
        throw new ConfigError([`cannot read known_hosts file ${knownHostsPath}: ${(error as Error).message}`], {
          where: `${where}.channel.knownHostsFile`,
        });
      }
    }
    const address = `${options.host}:${options.port}`;
    let refusal: SshHostKeyError | undefined;

    const hostVerifier = (key: Buffer): boolean => {
      const fingerprint = fingerprintOf(key);
      const type = keyTypeOf(key);
      if (options.fingerprint) {
        if (fingerprint === options.fingerprint) return true;
        refusal = new SshHostKeyError(
          `the SSH server at ${address} presented host key ${type} ${fingerprint}, not the configured fingerprint ${options.fingerprint}; refusing to connect`,
          {
            where,
            fingerprint,
            hint: 'If the guest was reinstalled or its host key rotated, check the new key on the guest (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and update fingerprint',
          },
        );
        return false;
      }
      const verdict = checkKnownHosts(knownHosts ?? [], options.host, options.port, key);
      if (verdict.ok) return true;
      const what =
        verdict.problem === 'revoked'
          ? 'which is marked @revoked in'
          : verdict.problem === 'changed'
            ? `which differs from the ${type} key listed for this host in`
            : 'which is not listed for this host in';
      refusal = new SshHostKeyError(
        `the SSH server at ${address} presented host key ${type} ${fingerprint}, ${what} ${knownHostsPath}; refusing to connect`,
        {
          where,
          fingerprint,
          hint:
            verdict.problem === 'changed'
              ? 'The host key changed: this may be an attack, or the guest was reinstalled. Verify the key on the guest before replacing the known_hosts line'
              : `Verify the key on the guest (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then add it to known_hosts (ssh-keyscan -p ${options.port} ${options.host}) or set fingerprint`,
        },
      );
      return false;
    };

    const known = knownHosts ? knownKeyTypes(knownHosts, options.host, options.port) : [];
    const preferred = known.flatMap((type) => HOST_KEY_ALGORITHMS[type] ?? []);
    const allAlgorithms = Object.values(HOST_KEY_ALGORITHMS).flat();
    const serverHostKey = [...preferred, ...allAlgorithms.filter((a) => !preferred.includes(a))];

    const client = new ssh2.Client();
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve());
      client.once('error', (error: Error & { level?: string }) => {
        if (refusal) return reject(refusal);
        const authFailed = error.level === 'client-authentication';
        reject(
          new (authFailed ? StillpointError : TransientError)(`SSH connection to ${options.user}@${address} failed: ${error.message}`, {
            where,
            cause: error,
            hint: authFailed ? `Check that the key is in ~${options.user}/.ssh/authorized_keys on the guest` : undefined,
          }),
        );
      });
      client.connect({
        host: options.host,
        port: options.port,
        username: options.user,
        privateKey,
        passphrase,
        readyTimeout: options.connectTimeoutMs,
        hostVerifier,
        algorithms: { serverHostKey: serverHostKey as ssh2.ServerHostKeyAlgorithm[] },
      });
    });
    debug('connected to %s', address);
    return new SshChannel(client, options, where);
  }

  /** Run a POSIX sh script on the guest (through `sudo -n` when configured). */
  exec(script: string, timeoutMs: number): Promise<ExecOutcome> {
    const command = `${this.options.sudo ? 'sudo -n ' : ''}sh -c ${shellQuote(script)}`;
    return new Promise((resolve) => {
      this.client.exec(command, (error, stream) => {
        if (error) {
          resolve({ code: null, stderr: '', stdout: '', timedOut: false, error: `SSH exec failed on ${this.description}: ${error.message}` });
          return;
        }
        let stdout = '';
        let stderr = '';
        let timedOut = false;
        const timer = setTimeout(() => {
          timedOut = true;
          try {
            stream.signal('KILL');
          } catch {
            // not supported by the server
          }
          stream.close();
        }, timeoutMs);
        stream.on('data', (chunk: Buffer) => {
          stdout += chunk.toString('utf8');
        });
        stream.stderr.on('data', (chunk: Buffer) => {
          stderr = (stderr + chunk.toString('utf8')).slice(-4000);
        });
        stream.on('close', (code: number | null | undefined) => {
          clearTimeout(timer);
          resolve({ code: timedOut ? null : (code ?? null), stdout, stderr, timedOut });
        });
      });
    });
  }

  async probe(): Promise<void> {
    const result = await this.exec(
      'command -v fsfreeze >/dev/null 2>&1 || { echo "fsfreeze (util-linux) is not on PATH ($PATH)" >&2; exit 127; }; ' +
        'command -v setsid >/dev/null 2>&1 || { echo "setsid (util-linux) is not on PATH ($PATH)" >&2; exit 127; }; ' +
        '[ "$(id -u)" = 0 ] || { echo "runs as $(id -un), not root: fsfreeze needs root" >&2; exit 1; }',
      30_000,
    );
    if (result.code !== 0) {
      throw new StillpointError(`the guest cannot freeze over ${this.description}: ${result.error ?? result.stderr.trim()}`, {
        where: this.where,
        hint: this.options.sudo
          ? 'Install util-linux on the guest and allow the user passwordless sudo for sh'
          : 'Install util-linux on the guest; connect as root or set sudo: true',
      });
    }
  }

  async mountTable(): Promise<MountTable> {
    const result = await this.exec(
      'cat /proc/self/mountinfo && echo "--- loop devices" && for d in /sys/dev/block/*; do [ -e "$d/loop" ] && echo "${d##*/}"; done; true',
      30_000,
    );
    const [mountinfo, loops = ''] = result.stdout.split('--- loop devices\n');
    if (result.code !== 0 || !mountinfo) {
      throw new StillpointError(`could not read the guest's mount table: ${result.error ?? result.stderr.trim()}`, { where: this.where });
    }
    return {
      mounts: parseMountInfo(mountinfo, `${this.where} /proc/self/mountinfo`),
      loopDevices: new Set(loops.split('\n').filter((l) => /^\d+:\d+$/.test(l))),
    };
  }

  async runScript(command: string, timeoutMs: number): Promise<ScriptResult> {
    const result = await this.exec(command, timeoutMs);
    const tail = result.stderr.trim() ? `: ${result.stderr.trim().split('\n').slice(-3).join(' | ')}` : '';
    if (result.error) return { ok: false, summary: result.error };
    if (result.timedOut) return { ok: false, summary: `timed out after ${timeoutMs} ms${tail}` };
    return { ok: result.code === 0, summary: `exit code ${result.code}${tail}` };
  }

  /**
   * The watchdog on the guest: `setsid sh -c 'sleep <deadline>; fsfreeze -u ...' <token>`, detached
   * from the SSH session. Disarming kills it after checking, by its token, that the pid is still it.
   */
  async armWatchdog(targets: FreezeTarget[], deadlineMs: number): Promise<ArmedWatchdog> {
    const token = `stillpoint-fsfreeze-watchdog-${randomUUID()}`;
    const seconds = (deadlineMs / 1000).toFixed(3);
    const thaws = [...targets].reverse().map((t) => `fsfreeze -u ${shellQuote(t.mountPoint)}`);
    const inner = `sleep ${seconds}; ${thaws.join('; ')}`;
    const result = await this.exec(`setsid sh -c ${shellQuote(inner)} ${token} </dev/null >/dev/null 2>&1 & echo $!`, 30_000);
    const pid = Number(result.stdout.trim());
    if (result.code !== 0 || !Number.isInteger(pid) || pid <= 0) {
      throw new StillpointError(`could not start the freeze watchdog on the guest: ${result.error ?? result.stderr.trim()}`, {
        where: this.where,
      });
    }
    const armedAt = Date.now();
    debug('guest watchdog pid %d armed for %d ms', pid, deadlineMs);
    return {
      armedAt,
      disarm: async () => {
        const check =
          `if tr '\\000' ' ' < /proc/${pid}/cmdline 2>/dev/null | grep -q ${token}; ` +
          `then kill -9 -${pid} 2>/dev/null || kill -9 ${pid}; echo disarmed; else echo gone; fi`;
        const answer = await this.exec(check, 30_000);
        const word = answer.stdout.trim();
        if (word === 'disarmed') return { fired: false };
        if (word === 'gone') return { fired: true, reason: 'the guest watchdog had already run (deadline reached)' };
        return { fired: false, reason: `could not disarm the guest watchdog: ${answer.error ?? answer.stderr.trim()}` };
      },
    };
  }

  async disarmOrphanWatchdogs(targets: FreezeTarget[]): Promise<number> {
    if (targets.length === 0) return 0;
    // Our watchdogs are `sh -c 'sleep N; fsfreeze -u ...' stillpoint-fsfreeze-watchdog-<uuid>`.
    const thaw = `fsfreeze -u ${shellQuote(targets[0].mountPoint)}`;
    const result = await this.exec(
      'for p in /proc/[0-9]*; do ' +
        `c=$(tr '\\000' ' ' < "$p/cmdline" 2>/dev/null) || continue; ` +
        'case "$c" in "sh -c sleep "*" stillpoint-fsfreeze-watchdog-"*) ;; *) continue ;; esac; ' +
        `case "$c" in *${shellQuote(thaw)}*) kill -9 -"\${p#/proc/}" 2>/dev/null && echo "\${p#/proc/}" ;; esac; ` +
        'done; true',
      30_000,
    );
    const pids = result.stdout.split('\n').filter((l) => /^\d+$/.test(l));
    debug('disarmed %d orphan guest watchdog(s)', pids.length);
    return pids.length;
  }

  private runFsfreeze = async (flag: '-f' | '-u', mountPoint: string, timeoutMs: number): Promise<CommandOutcome> =>
    this.exec(`fsfreeze ${flag} ${shellQuote(mountPoint)}`, timeoutMs);

  freeze(targets: FreezeTarget[], deadlineAt: number): Promise<FreezeResult> {
    return freezeInOrder(this.runFsfreeze, targets, deadlineAt);
  }

  thaw(targets: FreezeTarget[]): Promise<ThawReport[]> {
    return thawInReverse(this.runFsfreeze, targets);
  }

  async close(): Promise<void> {
    this.client.end();
  }
}
