import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LabDriver, type LabDriverOptions } from '../../plugins/lab/driver.ts';
import type { LabFileInput } from '../../plugins/lab/model.ts';

export const MiB = 1024 * 1024;

/** A small lab: one 2019 host; a running Windows VM (2 disks), a Linux VM without the VSS daemon, an off VM. */
export function smallLab(extra: Partial<LabFileInput> = {}): LabFileInput {
  return {
    hosts: [{ name: 'hv01', osBuild: 17763 }],
    volumes: [{ name: 'vol1' }],
    vms: [
      {
        id: 'vm-win-1', name: 'win1', host: 'hv01', configurationVersion: '9.0', guestOs: 'windows', state: 'running',
        integration: { vssRequestor: { enabled: true, running: true } },
        disks: [
          { id: 'SCSI 0:0', volume: 'vol1', file: 'win1/win1.vhdx', virtualSize: 16 * MiB },
          { id: 'SCSI 0:1', volume: 'vol1', file: 'win1/win1-data.vhdx', virtualSize: 16 * MiB },
        ],
      },
      {
        id: 'vm-lin-1', name: 'lin-noq', host: 'hv01', configurationVersion: '9.0', guestOs: 'linux', state: 'running',
        integration: { vssDaemon: false },
        disks: [{ id: 'SCSI 0:0', volume: 'vol1', file: 'lin-noq/lin-noq.vhdx', virtualSize: 16 * MiB }],
      },
      {
        id: 'vm-off-1', name: 'cold1', host: 'hv01', configurationVersion: '9.0', guestOs: 'linux', state: 'off',
        integration: { vssDaemon: true },
        disks: [{ id: 'SCSI 0:0', volume: 'vol1', file: 'cold1/cold1.vhdx', virtualSize: 16 * MiB }],
      },
    ],
    workload: { dataPages: 512, pageDelayMs: 2, txGapMs: 2 },
    ...extra,
  };
}

export interface Lab {
  dir: string;
  driver: LabDriver;
  /** Another driver on the same lab (after the first is closed). */
  reopen(options?: Partial<LabDriverOptions>): LabDriver;
  cleanup(): Promise<void>;
}

export async function makeLab(lab: LabFileInput = smallLab(), options: Partial<LabDriverOptions> = {}): Promise<Lab> {
  const dir = await mkdtemp(join(tmpdir(), 'stillpoint-lab-'));
  await writeFile(join(dir, 'lab.json'), JSON.stringify(lab, null, 2));
  const drivers: LabDriver[] = [];
  const make = (o: Partial<LabDriverOptions> = {}) => {
    const d = new LabDriver({ name: 'lab', dir, ...options, ...o });
    drivers.push(d);
    return d;
  };
  const driver = make();
  return {
    dir,
    driver,
    reopen: make,
    async cleanup() {
      for (const d of drivers) await d.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
