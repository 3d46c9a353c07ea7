import { join } from 'node:path';
import type { TestFn } from 'ava';
import { driverContract } from '../../core/testing/driver-contract.ts';
import { createHypervDriver } from '../../plugins/hyperv/index.ts';
import { ReplayRunner } from '../../plugins/hyperv/replay-runner.ts';
import type { PowerShellEdition } from '../../plugins/hyperv/runner.ts';
import { FIXTURES } from './helpers.ts';

/** The contract suite's tests in the order it registers them, one recorded fixture each. */
const FIXTURE_PER_TEST = [
  'contract-1-inventory', 'contract-2-production', 'contract-3-standard', 'contract-4-unquiescable',
  'contract-5-off-vm', 'contract-6-change-tracking', 'contract-7-unknown-vm',
];

/**
 * Run the shared driver contract suite against the Hyper-V driver over replayed fixtures: each
 * test gets a fresh driver on the next fixture, and its teardown fails when recorded calls were
 * left unreplayed (so the driver sent exactly the scripts the real host answered).
 */
export function hypervContract(test: TestFn, edition: PowerShellEdition): void {
  let next = 0;
  driverContract(test, async () => {
    const scenario = FIXTURE_PER_TEST[next++];
    if (!scenario) throw new Error(`the contract suite has more tests than recorded fixtures (${FIXTURE_PER_TEST.length}); record the new test's fixture`);
    const runner = ReplayRunner.fromFile(join(FIXTURES, `${scenario}.json`), edition);
    const driver = createHypervDriver({ name: 'hv', type: 'hyperv', options: { pollIntervalMs: 0 } }, runner);
    return {
      driver,
      scenario: { runningVm: 'sql02', offVm: 'archive01', unquiescableVm: 'build02', filesAreLocal: false, changeTracking: true },
      async teardown() {
        runner.assertDone();
      },
    };
  });
}
