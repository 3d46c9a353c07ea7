/**
 * The freeze watchdog: a detached process (its own session, so a signal to Stillpoint's process
 * group does not reach it) that thaws when
 *   - the deadline passes, or
 *   - its stdin reaches end of file: Stillpoint died (even by SIGKILL) or forgot it, or
 *   - it gets SIGTERM, SIGINT or SIGHUP,
 * unless Stillpoint tells it `disarm` first (after thawing by itself).
 *
 * Protocol on stdout, one line each: `armed <epoch ms> <pid>`, then `disarmed` or
 * `fired <epoch ms> <reason>`. It writes no file: the filesystem it would write to may be frozen.
 *
 * Run: node --import tsx watchdog.ts <spec JSON> <deadline ms>   (spawned by watchdog-spawn.ts)
 */
import { execFile } from 'node:child_process';
import { thawThroughAgent } from './qga-client.ts';

export type WatchdogSpec =
  | { kind: 'local'; mountPoints: string[] }
  | { kind: 'qga'; socket: string; requestTimeoutMs: number };

function runFsfreezeThaw(mountPoint: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('fsfreeze', ['-u', mountPoint], { timeout: 30_000 }, (error, _stdout, stderr) => {
      resolve(error ? String(stderr || error.message).trim() : undefined);
    });
  });
}

async function thaw(spec: WatchdogSpec): Promise<void> {
  if (spec.kind === 'local') {
    for (const mountPoint of [...spec.mountPoints].reverse()) {
      // "Invalid argument" = not frozen: nothing to do. Anything else: try once more.
      const problem = await runFsfreezeThaw(mountPoint);
      if (problem && !/Invalid argument/i.test(problem)) await runFsfreezeThaw(mountPoint);
    }
    return;
  }
  // The agent serves one client at a time: keep trying for a while if Stillpoint still holds it.
  const giveUpAt = Date.now() + 120_000;
  for (;;) {
    try {
      await thawThroughAgent(spec.socket, spec.requestTimeoutMs);
      return;
    } catch (error) {
      if (Date.now() > giveUpAt) throw error;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

function say(line: string): void {
  try {
    process.stdout.write(`${line}\n`);
  } catch {
    // Stillpoint is gone; nobody listens.
  }
}

function main(): void {
  const spec = JSON.parse(process.argv[2] ?? '') as WatchdogSpec;
  const deadlineMs = Number(process.argv[3]);
  if (!Number.isFinite(deadlineMs) || deadlineMs <= 0) throw new Error(`watchdog: bad deadline ${process.argv[3]}`);
  process.stdout.on('error', () => {});

  let firing: Promise<void> | undefined;
  let firedAt = 0;
  let firedReason = '';
  const fire = (reason: string): Promise<void> => {
    if (!firing) {
      clearTimeout(timer);
      firedAt = Date.now();
      firedReason = reason;
      firing = thaw(spec)
        .catch((error: unknown) => {
          firedReason += `; thaw failed: ${error instanceof Error ? error.message : String(error)}`;
        })
        .then(() => say(`fired ${firedAt} ${firedReason}`));
      // After firing, linger only until Stillpoint asks (or a minute passes).
      setTimeout(() => process.exit(0), 60_000);
    }
    return firing;
  };

  const timer = setTimeout(() => void fire(`deadline of ${deadlineMs} ms reached`), deadlineMs);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(signal, () => void fire(`got ${signal}`).then(() => process.exit(0)));
  }

  let buffered = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    buffered += chunk;
    if (!buffered.includes('disarm\n')) return;
    if (firing) {
      void firing.then(() => process.exit(0));
    } else {
      clearTimeout(timer);
      say('disarmed');
      process.exit(0);
    }
  });
  process.stdin.on('end', () => void fire('Stillpoint went away without thawing').then(() => process.exit(0)));
  process.stdin.on('error', () => void fire('lost the pipe to Stillpoint').then(() => process.exit(0)));

  say(`armed ${Date.now()} ${process.pid}`);
}

main();
