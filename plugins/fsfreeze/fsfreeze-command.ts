/**
 * Freeze and thaw through the `fsfreeze` program (util-linux), wherever it runs: on this machine
 * (local channel) or on a guest over SSH. The order and the rollback live here, once.
 */
import createDebug from 'debug';
import type { FreezeResult, ThawReport } from './channel.ts';
import { describeTarget, type FreezeTarget } from './mounts.ts';

const debug = createDebug('stillpoint:fsfreeze');

export interface CommandOutcome {
  /** Exit code; null when it did not exit (timed out, killed, connection lost). */
  code: number | null;
  stderr: string;
  timedOut: boolean;
  /** Why it could not run at all (spawn error, SSH channel refused). */
  error?: string;
}

/** Runs `fsfreeze -f|-u <mountPoint>` on the machine the channel reaches. */
export type FsfreezeRunner = (flag: '-f' | '-u', mountPoint: string, timeoutMs: number) => Promise<CommandOutcome>;

/** The last line of fsfreeze's stderr, e.g. "fsfreeze: /data: freeze failed: Operation not supported". */
export function explain(outcome: CommandOutcome, timeoutMs: number): string {
  if (outcome.error) return outcome.error;
  if (outcome.timedOut) return `fsfreeze did not finish within ${timeoutMs} ms`;
  const lastLine = outcome.stderr.trim().split('\n').pop() ?? '';
  return lastLine || `fsfreeze exited with code ${outcome.code}`;
}

/** Freeze in order; at the first failure thaw (in reverse) what this call froze, and say which failed and why. */
export async function freezeInOrder(run: FsfreezeRunner, targets: FreezeTarget[], deadlineAt: number): Promise<FreezeResult> {
  const frozen: FreezeTarget[] = [];
  for (const target of targets) {
    const remaining = deadlineAt - Date.now();
    let reason: string | undefined;
    if (remaining <= 0) {
      reason = 'the freeze deadline passed before this filesystem could be frozen';
    } else {
      const outcome = await run('-f', target.mountPoint, remaining);
      if (outcome.code === 0) {
        debug('froze %s', describeTarget(target));
        frozen.push(target);
        continue;
      }
      reason = explain(outcome, remaining);
      // A freeze that timed out may still complete in the kernel; thaw it with the others.
      if (outcome.timedOut || outcome.code === null) frozen.push(target);
    }
    debug('freeze of %s failed: %s; thawing %d', describeTarget(target), reason, frozen.length);
    const thawed = await thawInReverse(run, frozen);
    return {
      ok: false,
      failures: [{ target, reason }],
      rolledBack: thawed.filter((r) => r.state === 'thawed' && r.target !== target).map((r) => r.target),
      stillFrozen: thawed
        .filter((r) => r.state === 'failed')
        .map((r) => ({ target: r.target, reason: r.reason ?? 'thaw failed' })),
    };
  }
  return { ok: true };
}

const THAW_TIMEOUT_MS = 30_000;

/** Thaw in reverse order. "Invalid argument" from FITHAW means the filesystem was not frozen any more. */
export async function thawInReverse(run: FsfreezeRunner, targets: FreezeTarget[]): Promise<ThawReport[]> {
  const reports: ThawReport[] = [];
  for (const target of [...targets].reverse()) {
    const outcome = await run('-u', target.mountPoint, THAW_TIMEOUT_MS);
    if (outcome.code === 0) {
      reports.push({ target, state: 'thawed' });
    } else if (/Invalid argument/i.test(outcome.stderr)) {
      reports.push({ target, state: 'already-thawed', reason: 'it was no longer frozen when Stillpoint thawed it' });
    } else {
      reports.push({ target, state: 'failed', reason: explain(outcome, THAW_TIMEOUT_MS) });
    }
    debug('thaw %s: %s', describeTarget(target), reports.at(-1)?.state);
  }
  return reports.reverse();
}
