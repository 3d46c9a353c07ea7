/**
 * The demo lab of `stillpoint lab init DIR`: one VM for each case of DESIGN.md's prerequisites,
 * so the default job shows online backups and every kind of fallback with its reason.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { StillpointError } from '../../core/errors.ts';
import { LabDriver } from './driver.ts';
import { LAB_FILE, parseLabFile, type LabFileInput } from './model.ts';

const MiB = 1024 * 1024;

export function demoLab(): LabFileInput {
  return {
    description: 'Stillpoint demo lab: a Hyper-V 2019 host and a two-node cluster whose functional level is still 8. Edit freely; see plugins/lab/README.md.',
    hosts: [
      { name: 'hv01', osBuild: 17763 },
      { name: 'hvc-node1', osBuild: 17763, cluster: 'clu01' },
      { name: 'hvc-node2', osBuild: 17763, cluster: 'clu01' },
    ],
    clusters: [{ name: 'clu01', nodes: ['hvc-node1', 'hvc-node2'], functionalLevel: 8 }],
    volumes: [{ name: 'vol1' }, { name: 'csv1' }],
    vms: [
      {
        id: '6f1c2a10-0001-4c1e-9a01-000000000001', name: 'win-app', host: 'hv01', configurationVersion: '9.0', generation: 2,
        guestOs: 'windows', state: 'running', checkpointType: 'production',
        integration: { vssRequestor: { enabled: true, running: true } },
        disks: [
          { id: 'SCSI 0:0', volume: 'vol1', file: 'win-app/win-app.vhdx', virtualSize: 128 * MiB },
          { id: 'SCSI 0:1', volume: 'vol1', file: 'win-app/win-app-data.vhdx', virtualSize: 64 * MiB },
        ],
        notes: 'Windows Server 2019 guest, configuration 9.0, VSS integration service running: online backup.',
      },
      {
        id: '6f1c2a10-0002-4c1e-9a01-000000000002', name: 'linux-db', host: 'hv01', configurationVersion: '9.0', generation: 2,
        guestOs: 'linux', state: 'running', checkpointType: 'production', integration: { vssDaemon: true },
        disks: [{ id: 'SCSI 0:0', volume: 'vol1', file: 'linux-db/linux-db.vhdx', virtualSize: 64 * MiB }],
        notes: 'Linux guest with the Hyper-V VSS daemon: online backup (fsfreeze through the daemon).',
      },
      {
        id: '6f1c2a10-0003-4c1e-9a01-000000000003', name: 'linux-web', host: 'hv01', configurationVersion: '9.0', generation: 2,
        guestOs: 'linux', state: 'running', checkpointType: 'production', integration: { vssDaemon: false },
        disks: [{ id: 'SCSI 0:0', volume: 'vol1', file: 'linux-web/linux-web.vhdx', virtualSize: 64 * MiB }],
        notes: 'Linux guest without the VSS daemon: cannot be quiesced, falls back to crash-consistent.',
      },
      {
        id: '6f1c2a10-0004-4c1e-9a01-000000000004', name: 'legacy-erp', host: 'hv01', configurationVersion: '5.0', generation: 1,
        guestOs: 'windows', state: 'running', checkpointType: 'production',
        integration: { vssRequestor: { enabled: true, running: true } },
        disks: [{ id: 'IDE 0:0', volume: 'vol1', file: 'legacy-erp/legacy-erp.vhdx', virtualSize: 64 * MiB }],
        notes: 'Imported from 2012 R2, configuration 5.0 not upgraded: falls back to crash-consistent.',
      },
      {
        id: '6f1c2a10-0005-4c1e-9a01-000000000005', name: 'clu-files', host: 'hvc-node1', configurationVersion: '8.0', generation: 2,
        guestOs: 'windows', state: 'running', checkpointType: 'production',
        integration: { vssRequestor: { enabled: true, running: true } },
        disks: [{ id: 'SCSI 0:0', volume: 'csv1', file: 'clu-files/clu-files.vhdx', virtualSize: 64 * MiB }],
        notes: 'Clustered VM; the cluster functional level is still 8 (2012 R2): falls back to crash-consistent.',
      },
    ],
    failures: [],
  };
}

/** The Stillpoint config that backs up the demo lab (local repository in DIR/repository). */
export function demoConfig(): Record<string, unknown> {
  return {
    plugins: ['lab', 'vhdx', 'local'],
    drivers: [{ name: 'lab', type: 'lab', options: { dir: '.' } }],
    repository: { storage: { type: 'local', options: { path: './repository' } } },
    jobs: [{ name: 'default', consistency: 'prefer', mode: 'onHost', vms: { drivers: ['lab'] } }],
  };
}

export const DEMO_CONFIG_FILE = 'stillpoint.config.json';

/**
 * Create the demo lab in `dir` (which must be empty or absent unless `force`): lab.json, the
 * volumes with their base disks, and the config file. Returns the files written.
 */
export async function initDemoLab(dir: string, options: { force?: boolean } = {}): Promise<{ dir: string; labFile: string; configFile: string; vms: string[] }> {
  const root = resolve(dir);
  await mkdir(root, { recursive: true });
  const entries = await readdir(root);
  if (entries.length > 0 && !options.force) {
    throw new StillpointError(`${root} is not empty`, { where: root, hint: 'choose an empty (or new) directory, or pass --force to write the demo into it' });
  }
  const lab = demoLab();
  parseLabFile(lab, join(root, LAB_FILE));
  const labFile = join(root, LAB_FILE);
  await writeFile(labFile, JSON.stringify(lab, null, 2) + '\n');
  const configFile = join(root, DEMO_CONFIG_FILE);
  await writeFile(configFile, JSON.stringify(demoConfig(), null, 2) + '\n');
  // Create the base disks (the driver creates what is missing) without starting guests.
  const driver = new LabDriver({ name: 'lab', dir: root, guests: false });
  try {
    await driver.open();
  } finally {
    await driver.close();
  }
  return { dir: root, labFile, configFile, vms: (lab.vms ?? []).map((v) => v.name) };
}
