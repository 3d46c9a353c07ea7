/**
 * Starts the detached watchdog process (watchdog.ts) and talks to it over its stdin/stdout pipes.
 * The pipes are the lifeline: when this process dies, the watchdog's stdin ends and it thaws.
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import createDebug from 'debug';
import { StillpointError } from '../../core/errors.ts';
import type { ArmedWatchdog } from './channel.ts';
import type { WatchdogSpec } from './watchdog.ts';

const debug = createDebug('stillpoint:fsfreeze');

const WATCHDOG_FILE = fileURLToPath(new URL('./watchdog.ts', import.meta.url));
const ARM_TIMEOUT_MS = 20_000;
const DISARM_TIMEOUT_MS = 10_000;

function tsxLoader(): string {
  return import.meta.resolve('tsx');
}

export async function spawnWatchdog(spec: WatchdogSpec, deadlineMs: number, where: string): Promise<ArmedWatchdog> {
  const child = spawn(process.execPath, ['--import', tsxLoader(), WATCHDOG_FILE, JSON.stringify(spec), String(deadlineMs)], {
    detached: true,
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  const lines: string[] = [];
  const listeners = new Set<() => void>();
  let exited = false;
  let text = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    text += chunk;
    let newline: number;
    while ((newline = text.indexOf('\n')) >= 0) {
      lines.push(text.slice(0, newline));
      text = text.slice(newline + 1);
    }
    for (const listener of listeners) listener();
  });
  child.stdin.on('error', () => {});
  child.on('exit', () => {
    exited = true;
    for (const listener of listeners) listener();
  });
  const spawnError = new Promise<never>((_, reject) => child.once('error', reject));

  const waitFor = (predicate: (line: string) => boolean, timeoutMs: number): Promise<string | undefined> =>
    new Promise((resolve) => {
      const check = () => {
        const found = lines.find(predicate);
        if (found !== undefined || exited) {
          clearTimeout(timer);
          listeners.delete(check);
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        resolve(undefined);
      }, timeoutMs);
      listeners.add(check);
      check();
    });

  let armedLine: string | undefined;
  try {
    armedLine = await Promise.race([waitFor((line) => line.startsWith('armed '), ARM_TIMEOUT_MS), spawnError]);
  } catch (error) {
    throw new StillpointError('could not start the freeze watchdog', { where, cause: error });
  }
  if (!armedLine) {
    if (!exited) child.kill('SIGKILL');
    throw new StillpointError(`the freeze watchdog did not start within ${ARM_TIMEOUT_MS} ms; not freezing`, { where });
  }
  const armedAt = Date.now();
  debug('watchdog %d armed for %d ms (%s)', child.pid, deadlineMs, spec.kind);
  // Do not keep Stillpoint alive for the watchdog; if Stillpoint exits, the watchdog thaws.
  child.unref();
  (child.stdin as unknown as Socket).unref();
  (child.stdout as unknown as Socket).unref();

  let disarmed: Promise<{ fired: boolean; firedAt?: number; reason?: string }> | undefined;
  return {
    armedAt,
    disarm() {
      disarmed ??= (async () => {
        if (!exited) child.stdin.write('disarm\n');
        const answer = await waitFor((line) => line === 'disarmed' || line.startsWith('fired '), DISARM_TIMEOUT_MS);
        child.stdin.end();
        if (answer?.startsWith('fired ')) {
          const [, at, ...reason] = answer.split(' ');
          return { fired: true, firedAt: Number(at), reason: reason.join(' ') };
        }
        if (answer === 'disarmed') return { fired: false };
        // No answer: it is gone or hung. Make sure it does not thaw a later freeze.
        if (!exited) child.kill('SIGKILL');
        return { fired: false, reason: 'the watchdog did not answer' };
      })();
      return disarmed;
    },
  };
}
