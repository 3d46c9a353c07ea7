import test from 'ava';
import { driverContract } from '../../core/testing/driver-contract.ts';
import { makeLab, sleep } from './helpers.ts';

// The shared hypervisor-driver contract suite, run against the lab on real VHDX files with running guests.
driverContract(test, async () => {
  const lab = await makeLab();
  return {
    driver: lab.driver,
    scenario: {
      runningVm: 'win1',
      offVm: 'cold1',
      unquiescableVm: 'lin-noq',
      filesAreLocal: true,
      changeTracking: true,
      // The guest writes by itself; give it time to write between the two checkpoints.
      async makeChanges() { await sleep(150); },
    },
    teardown: () => lab.cleanup(),
  };
});
