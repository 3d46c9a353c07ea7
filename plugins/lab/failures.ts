/**
 * Failure injection: failures listed in lab.json (`failures`) or in the driver options fire when
 * the lab reaches the matching step; `times` bounds how often (counted across processes in
 * state/failures.json, so "the merge fails once" survives into the next run).
 */
import { readFileSync } from 'node:fs';
import type { Failure } from './model.ts';
import { writeAtomic } from './model.ts';
import type { EventTrace } from './trace.ts';

export type FailureStep = 'inventory' | 'checkpoint' | 'quiesce' | 'merge';

export class FailureInjector {
  readonly #failures: Failure[];
  readonly #countsFile: string;
  readonly #trace: EventTrace;

  constructor(failures: Failure[], countsFile: string, trace: EventTrace) {
    this.#failures = failures;
    this.#countsFile = countsFile;
    this.#trace = trace;
  }

  #counts(): Record<string, number> {
    try { return JSON.parse(readFileSync(this.#countsFile, 'utf8')) as Record<string, number>; } catch { return {}; }
  }

  /** The failure that fires now for this step and VM (consuming one of its `times`), if any. */
  async fire(step: FailureStep, target: { vm?: string; host: string }): Promise<Failure | undefined> {
    return this.#fire(step, target, (f) => f.on === step && (f.vm ? f.vm === target.vm : f.host === target.host));
  }

  /** The "host stops answering" failure that fires now for this step and host, if any. */
  async hostSilent(step: FailureStep, target: { vm?: string; host: string }): Promise<Failure | undefined> {
    return this.#fire(step, target, (f) => f.on === 'host' && f.host === target.host && (f.during === 'any' || f.during === step));
  }

  async #fire(step: FailureStep, target: { vm?: string; host: string }, match: (f: Failure) => boolean): Promise<Failure | undefined> {
    for (const failure of this.#failures) {
      const matches = match(failure);
      if (!matches) continue;
      const key = JSON.stringify(failure);
      const counts = this.#counts();
      const fired = counts[key] ?? 0;
      if (failure.times !== undefined && fired >= failure.times) continue;
      counts[key] = fired + 1;
      await writeAtomic(this.#countsFile, JSON.stringify(counts, null, 2) + '\n');
      this.#trace.record('failure-injected', { vm: target.vm, host: target.host, detail: `${failure.on}${failure.on === 'host' ? ` during ${step}` : ''}` });
      return failure;
    }
    return undefined;
  }
}
