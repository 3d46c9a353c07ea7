import createDebug from 'debug';
import { z } from 'zod';
import type { DriverSpec } from '../../core/engine/hooks.ts';
import { ConfigError } from '../../core/errors.ts';
import { definePlugin } from '../../core/plugin.ts';
import { HypervDriver } from './driver.ts';
import { NodePowerShellRunner } from './node-powershell-runner.ts';
import { hypervDriverOptionsSchema } from './options.ts';
import type { PowerShellRunner } from './runner.ts';

const debug = createDebug('stillpoint:hyperv');

/** Options of the plugin itself (`plugins: [{ name: 'hyperv' }]`); the driver's options are per `drivers[]` entry. */
export const hypervPluginOptionsSchema = z.object({}).strict();

/** Parse a `drivers[]` entry's options, reporting every problem with its path. */
export function parseDriverOptions(spec: DriverSpec) {
  const parsed = hypervDriverOptionsSchema.safeParse(spec.options ?? {});
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `drivers["${spec.name}"].options${i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('')}: ${i.message}`), {
      where: `drivers["${spec.name}"] (type hyperv)`,
    });
  }
  return parsed.data;
}

/** Make the driver for a spec; `runner` replaces the node-powershell runner (tests, other PowerShell hosts). */
export function createHypervDriver(spec: DriverSpec, runner?: PowerShellRunner): HypervDriver {
  const options = parseDriverOptions(spec);
  return new HypervDriver(spec.name, options, {
    runner: runner ?? (() => new NodePowerShellRunner({
      executable: options.powershell.executable,
      invocationTimeoutMs: options.powershell.invocationTimeoutMs,
      where: `drivers["${spec.name}"] (type hyperv)`,
    })),
  });
}

/**
 * The Hyper-V driver plugin: serves `drivers[]` entries with `type: 'hyperv'`.
 * See plugins/hyperv/README.md for host set-up, permissions and options.
 */
export default definePlugin('hyperv', hypervPluginOptionsSchema, () => ({
  name: 'hyperv',
  apply(engine) {
    engine.hooks.resolveDriver.tap('hyperv', (spec) => {
      if (spec.type !== 'hyperv') return undefined;
      debug('driver %s', spec.name);
      return createHypervDriver(spec);
    });
  },
}));

export { HypervDriver, hypervDriverOptionsSchema };
export { NodePowerShellRunner } from './node-powershell-runner.ts';
export { ReplayRunner, RecordingRunner, loadFixture, type Fixture } from './replay-runner.ts';
export type { PowerShellRunner } from './runner.ts';
