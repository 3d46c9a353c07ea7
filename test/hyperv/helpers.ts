import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { createHypervDriver } from '../../plugins/hyperv/index.ts';
import type { HypervDriver } from '../../plugins/hyperv/driver.ts';
import { ReplayRunner } from '../../plugins/hyperv/replay-runner.ts';
import type { PowerShellEdition } from '../../plugins/hyperv/runner.ts';
import type { VmFacts } from '../../core/contracts/vm.ts';

export const FIXTURES = join(fileURLToPath(new URL('.', import.meta.url)), 'fixtures');
export const EDITIONS: PowerShellEdition[] = ['5.1', '7'];

/** A Hyper-V driver that talks to a replayed fixture (every script checked against the recording). */
export function replayDriver(scenario: string, edition: PowerShellEdition, options: Record<string, unknown> = {}): { driver: HypervDriver; runner: ReplayRunner } {
  const runner = ReplayRunner.fromFile(join(FIXTURES, `${scenario}.json`), edition);
  const driver = createHypervDriver({ name: 'hv', type: 'hyperv', options: { pollIntervalMs: 0, ...options } }, runner);
  return { driver, runner };
}

export const GB = 1024 ** 3;
export const SQL_ID = '8f3c2a1e-5b7d-4c9a-9e21-3d4f6a7b8c90';
export const CP_ID = 'd7e1b2c3-4a5f-4e6d-9b8c-1a2b3c4d5e6f';
export const base = 'D:\\Hyper-V\\sql01\\Virtual Hard Disks\\';

/** sql01 as the inventory reported it before the checkpoint. */
export const sql01: VmFacts = {
  id: SQL_ID, name: 'sql01', host: 'HV01', driver: 'hv', clustered: false, configurationVersion: '9.0', generation: 2,
  guestOs: 'windows', state: 'running', checkpointType: 'production',
  integration: { vssRequestor: { enabled: true, running: true } },
  disks: [
    { id: 'SCSI 0:0', path: `${base}sql01-os.vhdx`, chain: [`${base}sql01-os.vhdx`], volume: 'D:\\', virtualSize: 127 * GB, format: 'vhdx' },
    { id: 'SCSI 0:1', path: `${base}sql01-data_0A4C1E7B-93D2-4B6F-8E15-2C7D9F3A1B60.avhdx`, chain: [`${base}sql01-data_0A4C1E7B-93D2-4B6F-8E15-2C7D9F3A1B60.avhdx`, `${base}sql01-data.vhdx`], volume: 'D:\\', virtualSize: 256 * GB, format: 'vhdx' },
  ],
};
