import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export const SSHD = '/usr/sbin/sshd';

/** Whether a real OpenSSH server can be started here (root and /usr/sbin/sshd). */
export function sshdAvailable(): string | null {
  if (!existsSync(SSHD)) return `${SSHD} is not installed (apt-get install openssh-server)`;
  if (process.getuid?.() !== 0) return 'starting sshd needs root';
  return null;
}

export interface TestSshd {
  dir: string;
  port: number;
  user: string;
  /** The client's private key (OpenSSH format) and the server's public host key line. */
  clientKey: string;
  hostKeyLine: string;
  hostKeyFingerprint: string;
  /** Where the SFTP repository goes. */
  root: string;
  /** PIDs of the per-connection sshd processes (children of the listener). */
  sessionPids(): number[];
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

async function waitForPort(port: number, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sshd exited (${child.exitCode}): ${stderr()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`sshd did not listen on ${port}: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Start a real OpenSSH server on loopback with a temporary host key and an authorized client key. */
export async function startSshd(): Promise<TestSshd> {
  const dir = mkdtempSync(join(tmpdir(), 'stillpoint-sshd-'));
  const keygen = (file: string) => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'stillpoint-test', '-f', file]);
  keygen(join(dir, 'host_key'));
  keygen(join(dir, 'client_key'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')), { mode: 0o600 });
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  // The store lives in memory when it can (fsync is then cheap, which keeps the tests fast).
  const root = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'stillpoint-sftp-store-'));
  const port = await freePort();
  writeFileSync(join(dir, 'sshd_config'), [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${join(dir, 'host_key')}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin yes',
    'StrictModes no',
    'UsePAM no',
    'Subsystem sftp internal-sftp',
    'LogLevel ERROR',
    '',
  ].join('\n'));
  let err = '';
  const child = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  await waitForPort(port, child, () => err);
  const hostPub = readFileSync(join(dir, 'host_key.pub'), 'utf8').trim().split(/\s+/);
  const fp = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(dir, 'host_key.pub')], { encoding: 'utf8' }).split(/\s+/)[1];
  const server: TestSshd = {
    dir,
    port,
    user: userInfo().username,
    clientKey: readFileSync(join(dir, 'client_key'), 'utf8'),
    hostKeyLine: `[127.0.0.1]:${port} ${hostPub[0]} ${hostPub[1]}`,
    hostKeyFingerprint: fp,
    root,
    sessionPids() {
      const pids: number[] = [];
      const walk = (pid: number) => {
        for (const task of safeReaddir(`/proc/${pid}/task`)) {
          const text = safeRead(`/proc/${pid}/task/${task}/children`);
          for (const c of text.split(/\s+/).filter(Boolean).map(Number)) {
            pids.push(c);
            walk(c);
          }
        }
      };
      if (child.pid) walk(child.pid);
      return pids;
    },
    async stop() {
      // Per-connection sshd processes outlive the listener: end them too, so that no client
      // socket (a store a failed test did not close) keeps the test process alive.
      for (const pid of server.sessionPids()) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
      }
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
      rmSync(root, { recursive: true, force: true });
    },
  };
  return server;
}

function safeReaddir(p: string): string[] {
  try { return readdirSync(p); } catch { return []; }
}
function safeRead(p: string): string {
  try { return readFileSync(p, 'utf8'); } catch { return ''; }
}
