import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { createHypervDriver } from '../../plugins/hyperv/index.ts';
import type { HypervDriver } from '../../plugins/hyperv/driver.ts';
import { ReplayRunner } from '../../plugins/hyperv/replay-runner.ts';
import type { PowerShellEdition } from '../../plugins/hyperv/runner.ts';

export const FIXTURES = join(fileURLToPath(new URL('.', import.meta.url)), 'fixtures');
export const EDITIONS: PowerShellEdition[] = ['5.1', '7'];

/** A Hyper-V driver that talks to a replayed fixture (every script checked against the recording). */
export function replayDriver(scenario: string, edition: PowerShellEdition, options: Record<string, unknown> = {}): { driver: HypervDriver; runner: ReplayRunner } {
  const runner = ReplayRunner.fromFile(join(FIXTURES, `${scenario}.json`), edition);
  const driver = createHypervDriver({ name: 'hv', type: 'hyperv', options: { pollIntervalMs: 0, ...options } }, runner);
  return { driver, runner };
}
