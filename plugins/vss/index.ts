import createDebug from 'debug';
import { z } from 'zod';
import { definePlugin } from '../../core/plugin.ts';
import { NodePowerShellRunner } from '../hyperv/node-powershell-runner.ts';
import type { PowerShellRunner } from '../hyperv/runner.ts';
import { VssSnapshotProvider } from './provider.ts';
import { WindowsVssQuiescer } from './quiescer.ts';

const debug = createDebug('stillpoint:vss');

export const vssOptionsSchema = z.object({
  /** Where the host keeps transportable metadata (.cab) and the record of each shadow copy. */
  metadataDir: z.string().min(1).default('C:\\ProgramData\\Stillpoint\\vss'),
  /** The VSS hardware provider id (`vssadmin list providers`); default: VSS chooses. */
  providerId: z.string().regex(/^\{?[0-9a-fA-F-]{36}\}?$/, 'a provider GUID').optional(),
  /** Per proxy name: where it keeps metadata and exposes shadow copies. */
  proxies: z.record(z.string(), z.object({
    metadataDir: z.string().min(1).default('C:\\ProgramData\\Stillpoint\\vss'),
    mountRoot: z.string().min(1).default('C:\\Stillpoint\\mnt'),
    metadataShare: z.string().min(1).optional(),
  }).strict()).default({}),
  powershell: z.object({
    executable: z.string().min(1).default('auto'),
    invocationTimeoutMs: z.number().int().nonnegative().default(30 * 60_000),
  }).strict().default({ executable: 'auto', invocationTimeoutMs: 30 * 60_000 }),
  /** Also serve Windows guests as their quiescer (readiness only; Hyper-V quiesces them). */
  quiescer: z.boolean().default(true),
}).strict();

export type VssOptions = z.output<typeof vssOptionsSchema>;

/** Build the provider (a runner other than node-powershell may be given, e.g. for tests). */
export function createVssProvider(options: VssOptions, runner?: PowerShellRunner): VssSnapshotProvider {
  let real: PowerShellRunner | undefined;
  const lazy: PowerShellRunner = runner ?? {
    get edition() { return real?.edition; },
    run(script: string) {
      real ??= new NodePowerShellRunner({ executable: options.powershell.executable, invocationTimeoutMs: options.powershell.invocationTimeoutMs, where: 'plugin vss' });
      return real.run(script);
    },
    async close() { await real?.close?.(); },
  };
  return new VssSnapshotProvider(lazy, { metadataDir: options.metadataDir, providerId: options.providerId, proxies: options.proxies });
}

/**
 * The VSS plugin: a volume-snapshot provider (transportable shadow copies through DiskShadow) for
 * Windows volumes, and the quiescer of Windows guests (readiness and outcome; see README.md).
 */
export default definePlugin('vss', vssOptionsSchema, (options) => {
  const provider = createVssProvider(options);
  const quiescer = new WindowsVssQuiescer();
  return {
    name: 'vss',
    provider,
    quiescer,
    apply(engine) {
      engine.hooks.resolveSnapshotProvider.tap('vss', (volume) => {
        if (!provider.servesSync(volume)) return undefined;
        debug('serving volume %s (%s)', volume.name, volume.path);
        return provider;
      });
      if (options.quiescer) {
        engine.hooks.resolveQuiescer.tap('vss', (vm) => (quiescer.serves(vm) ? quiescer : undefined));
      }
      engine.hooks.shutdown.tapPromise('vss', async () => {
        await provider.close();
      });
    },
  };
});

export { VssSnapshotProvider, WindowsVssQuiescer };
export { outcomeOfCheckpoint } from './quiescer.ts';
