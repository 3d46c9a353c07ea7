import { join } from 'node:path';
import { z } from 'zod';
import createDebug from 'debug';
import { definePlugin } from '../../core/plugin.ts';
import { BtrfsSnapshotProvider } from './provider.ts';

const debug = createDebug('stillpoint:btrfs');

export const btrfsOptionsSchema = z.object({
  /** Absolute directory (same btrfs filesystem) for snapshots; default `<volume>/.stillpoint-snapshots`. */
  snapshotDir: z.string().min(1).optional(),
  /** The btrfs-progs program to run. */
  program: z.string().min(1).default('btrfs'),
  /** Volumes that `stillpoint cleanup` scans for snapshots besides those snapshotted before. */
  volumes: z.array(z.object({ name: z.string().min(1), path: z.string().min(1) })).default([]),
  /** Per proxy name: where that proxy sees this host's `/` (e.g. an NFS mount); absent: the proxy runs on this host. */
  proxyRoots: z.record(z.string(), z.string().min(1)).default({}),
}).strict();

/**
 * The btrfs volume-snapshot provider: serves volumes that are btrfs subvolumes with read-only
 * subvolume snapshots, presented to proxies on the same host (or under `proxyRoots`).
 */
export default definePlugin('btrfs', btrfsOptionsSchema, (options, context) => {
  const resolvePath = (p: string) => (p.startsWith('/') ? p : join(context.configDir, p));
  const provider = new BtrfsSnapshotProvider({
    ...options,
    snapshotDir: options.snapshotDir ? resolvePath(options.snapshotDir) : undefined,
    volumes: options.volumes.map((v) => ({ name: v.name, path: resolvePath(v.path) })),
    stateFile: join(context.stateDir, 'btrfs', 'volumes.json'),
  });
  return {
    name: 'btrfs',
    provider,
    apply(engine) {
      engine.hooks.resolveSnapshotProvider.tap('btrfs', (volume) => {
        const why = provider.whyNot(volume);
        if (why) {
          debug('not serving volume %s: %s', volume.name, why);
          return undefined;
        }
        return provider;
      });
    },
  };
});

export { BtrfsSnapshotProvider };
