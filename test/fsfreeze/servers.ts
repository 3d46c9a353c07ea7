/**
 * Real servers for the fsfreeze channel tests: an OpenSSH server on 127.0.0.1 (random port, temp
 * host key, temp client key) and the QEMU guest agent on a unix socket with its own state
 * directory. Both serve "this machine" as the guest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { mustRun, sleep } from './helpers.ts';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export interface Sshd {
  port: number;
  /** `ssh-ed25519 AAAA...` */
  hostPublicKey: string;
  /** As `ssh-keygen -lf` prints it. */
  hostFingerprint: string;
  clientKeyFile: string;
  /** A known_hosts file that lists this server's key. */
  knownHostsFile: string;
  log(): string;
  stop(): Promise<void>;
}

export async function startSshd(dir: string): Promise<Sshd> {
  await mkdir(dir, { recursive: true });
  const hostKey = path.join(dir, 'host_ed25519_key');
  const clientKey = path.join(dir, 'client_ed25519_key');
  await mustRun('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'stillpoint-test-host', '-f', hostKey]);
  await mustRun('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'stillpoint-test-client', '-f', clientKey]);
  const authorizedKeys = path.join(dir, 'authorized_keys');
  await copyFile(`${clientKey}.pub`, authorizedKeys);
  await chmod(authorizedKeys, 0o600);
  const port = await freePort();
  const config = path.join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorizedKeys}`,
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  );
  // sshd's privilege separation directory (Debian's service unit creates it).
  if (!existsSync('/run/sshd')) await mkdir('/run/sshd', { mode: 0o755 });
  const child = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    log += chunk;
  });
  const until = Date.now() + 15_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.createConnection({ host: '127.0.0.1', port });
      socket.once('data', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) break;
    if (child.exitCode !== null || Date.now() > until) {
      await stopProcess(child);
      throw new Error(`sshd did not start on 127.0.0.1:${port}: ${log}`);
    }
    await sleep(100);
  }
  const hostPublicKey = (await readFile(`${hostKey}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ');
  const hostFingerprint = (await mustRun('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${hostKey}.pub`])).split(' ')[1];
  const knownHostsFile = path.join(dir, 'known_hosts');
  await writeFile(knownHostsFile, `[127.0.0.1]:${port} ${hostPublicKey}\n`);
  return {
    port,
    hostPublicKey,
    hostFingerprint,
    clientKeyFile: clientKey,
    knownHostsFile,
    log: () => log,
    stop: () => stopProcess(child),
  };
}

export interface GuestAgent {
  socket: string;
  log(): Promise<string>;
  stop(): Promise<void>;
}

/** Debian's qemu-ga on a unix socket, with its own state directory, pid file and log. */
export async function startGuestAgent(dir: string): Promise<GuestAgent> {
  const stateDir = path.join(dir, 'qga-state');
  await mkdir(stateDir, { recursive: true });
  const socket = path.join(dir, 'qga.sock');
  const logFile = path.join(dir, 'qga.log');
  const child = spawn(
    '/usr/sbin/qemu-ga',
    ['-m', 'unix-listen', '-p', socket, '-t', stateDir, '-f', path.join(dir, 'qga.pid'), '-l', logFile],
    { stdio: 'ignore' },
  );
  const until = Date.now() + 15_000;
  while (!existsSync(socket)) {
    if (child.exitCode !== null || Date.now() > until) {
      await stopProcess(child);
      throw new Error(`qemu-ga did not create ${socket}: ${await readFile(logFile, 'utf8').catch(() => '')}`);
    }
    await sleep(50);
  }
  return { socket, log: () => readFile(logFile, 'utf8').catch(() => ''), stop: () => stopProcess(child) };
}
