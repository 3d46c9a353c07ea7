/**
 * The lab plugin ("lab"): a simulated Hyper-V host and cluster in a directory, on real VHDX files.
 *
 * Taps:
 * - `resolveDriver` for `drivers[]` entries of `type: "lab"` (options: `labDriverOptionsSchema`);
 * - `resolveSnapshotProvider` for lab volumes ("lab-snapshot", see snapshot.ts);
 * - `diskRead` to record "base disk read" in the lab's event trace for VMs of a lab driver;
 * - `shutdown` to stop the guests and release the labs.
 */
import { resolve } from 'node:path';
import createDebug from 'debug';
import { z } from 'zod';
import { ConfigError } from '../../core/errors.ts';
import { definePlugin } from '../../core/plugin.ts';
import { LabDriver } from './driver.ts';
import { failureSchema, LabPaths, loadLabSync } from './model.ts';
import { LabSnapshotProvider, type LabVolume } from './snapshot.ts';

const debug = createDebug('stillpoint:lab');

/** Options of a `drivers[]` entry with `type: "lab"`. */
export const labDriverOptionsSchema = z.object({
  /** The lab directory (holds lab.json); relative to the config file's directory. */
  dir: z.string().min(1),
  /** Failures to inject besides those listed in lab.json. */
  failures: z.array(failureSchema).default([]),
  /** Run the guest workloads of running VMs while the lab is in use (default true). */
  guests: z.boolean().default(true),
  /** How long a production checkpoint waits for the guest to reach a consistent point (overrides lab.json). */
  quiesceDeadlineMs: z.number().int().positive().optional(),
  /** Overrides of lab.json's workload settings (pace of the guests' writes). */
  workload: z.object({
    pageDelayMs: z.number().int().min(0).optional(),
    txGapMs: z.number().int().min(0).optional(),
    minPages: z.number().int().min(2).max(16).optional(),
    maxPages: z.number().int().min(2).max(16).optional(),
    holdLimitMs: z.number().int().positive().optional(),
  }).strict().default({}),
}).strict();
export type LabDriverConfig = z.output<typeof labDriverOptionsSchema>;

/** The plugin's own options (none needed; drivers carry theirs). */
export const labPluginOptionsSchema = z.object({}).strict().default({});

export default definePlugin('lab', labPluginOptionsSchema, (_options, context) => {
  const drivers: LabDriver[] = [];
  const volumes = (): LabVolume[] => drivers.flatMap((d) => {
    try {
      const lab = loadLabSync(d.paths);
      return lab.volumes.map((v) => ({ name: v.name, path: d.paths.volumePath(lab, v.name), snapshotsDir: d.paths.snapshotsDir, trace: d.trace }));
    } catch (error) {
      debug('lab %s unreadable: %s', d.paths.dir, (error as Error).message);
      return [];
    }
  });
  const provider = new LabSnapshotProvider(volumes);

  return {
    name: 'lab',
    provider,
    drivers,
    apply(engine) {
      engine.hooks.resolveDriver.tap('lab', (spec) => {
        if (spec.type !== 'lab') return undefined;
        const parsed = labDriverOptionsSchema.safeParse(spec.options ?? {});
        if (!parsed.success) {
          throw new ConfigError(parsed.error.issues.map((i) => `drivers.${spec.name}.options${i.path.length ? '.' + i.path.join('.') : ''}: ${i.message}`), { where: `driver "${spec.name}"` });
        }
        const dir = resolve(context.configDir, parsed.data.dir);
        const existing = drivers.find((d) => d.name === spec.name && d.paths.dir === new LabPaths(dir).dir);
        if (existing) return existing;
        // Fail early, with every problem of lab.json named.
        loadLabSync(new LabPaths(dir));
        const driver = new LabDriver({ name: spec.name, ...parsed.data, dir });
        drivers.push(driver);
        return driver;
      });

      engine.hooks.resolveSnapshotProvider.tap('lab', (volume) => (provider.find(volume) ? provider : undefined));

      engine.hooks.diskRead.tap('lab', async (run, disk) => {
        const driver = drivers.find((d) => d === run.driver);
        if (!driver) return;
        driver.trace.record('base-disk-read', {
          vm: run.vm.name, disk: disk.diskId, path: disk.path,
          detail: [disk.path, ...disk.parentPaths].join(' <- '),
        });
      });

      engine.hooks.shutdown.tapPromise('lab', async () => {
        await Promise.all(drivers.map((d) => d.close()));
      });
    },
  };
});

export { LabDriver } from './driver.ts';
export { LabSnapshotProvider } from './snapshot.ts';
export { verifyDisk, verifyRawImage, type Verdict } from './verifier.ts';
export { readEvents, type LabEvent } from './trace.ts';
