import { z } from 'zod';
import { repositoryConfigSchema } from '../repository/options.ts';
import { retentionSchema } from '../repository/retention.ts';

/**
 * The whole config file, one schema. `config/schema.json` is generated from it
 * (`npx tsx scripts/gen-schema.ts`); a test checks the committed file matches.
 *
 * Secrets: any string value may contain `${env:NAME}`, replaced by the environment variable NAME
 * when the config is loaded (a missing variable is a config error). The repository passphrase has
 * its own `repository.encryption.passphraseEnv` / `passphraseFile`.
 */

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const name = (what: string) => z.string().regex(NAME, { error: `a ${what} name of letters, digits, ".", "_" or "-"` }).describe(`The ${what} name.`);
const options = z.record(z.string(), z.unknown()).default({}).describe("The plugin's options, validated by the plugin's own schema.");

/** A plugin: built-in short name ("lab", "vhdx", ...), npm package name, or path (./my-plugin.ts). */
export const pluginEntrySchema = z.union([
  z.string().min(1).describe('Built-in short name, npm package name, or path to a module whose default export is a plugin factory.'),
  z.object({
    use: z.string().min(1).describe('Built-in short name, npm package name, or path.'),
    options,
  }).strict(),
]);

export const driverSchema = z.object({
  name: name('driver'),
  /** Which plugin serves it: the value `resolveDriver` is asked for, e.g. "lab", "hyperv". */
  type: z.string().min(1).describe('Driver type, e.g. "lab" or "hyperv"; the built-in plugin of that name is loaded when not listed in "plugins".'),
  options,
  hosts: z.array(z.string().min(1)).optional().describe('Only back up VMs on these hosts of the driver (default: every host).'),
}).strict();

export const vmSelectorSchema = z.object({
  include: z.array(z.string().min(1)).min(1).default(['*']).describe('VM name globs (* and ?) or "id:<vm id>".'),
  exclude: z.array(z.string().min(1)).default([]),
  hosts: z.array(z.string().min(1)).optional(),
  drivers: z.array(z.string().min(1)).optional(),
}).strict();

export const modeSchema = z.enum(['onHost', 'offHost', 'auto']);
export const consistencySchema = z.enum(['require', 'prefer', 'crash']);

export const jobSchema = z.object({
  name: name('job'),
  vms: z.union([z.array(z.string().min(1)).min(1), vmSelectorSchema]).default({ include: ['*'], exclude: [] })
    .describe('Which VMs: a list of name globs, or { include, exclude, hosts, drivers }.'),
  mode: modeSchema.default('auto').describe('onHost: read on the host; offHost: from a volume snapshot on a proxy; auto: off-host where possible.'),
  consistency: consistencySchema.default('prefer').describe('require: fail rather than fall back; prefer: fall back to crash-consistent and say so; crash: never quiesce.'),
  proxy: z.string().min(1).optional().describe('Off-host proxy name.'),
  retention: retentionSchema.strict().optional().describe('Restore points to keep per VM after this job (default: the top-level retention).'),
}).strict();

export const limitsSchema = z.object({
  perHost: z.number().int().min(1).default(2).describe('VMs whose checkpoint, read and merge run at once on one host.'),
  perVolume: z.number().int().min(1).default(1).describe('Volume snapshots at once on one volume.'),
  perProxy: z.number().int().min(1).default(2).describe('VMs one proxy reads at once.'),
  perRepository: z.number().int().min(1).default(4).describe('Disks stored into the repository at once.'),
  vmsPerSnapshot: z.number().int().min(1).default(16).describe('VMs one volume snapshot may hold.'),
}).strict();

export const timeoutsSchema = z.object({
  freezeSeconds: z.number().min(1).max(600).default(20).describe('Longest a guest stays frozen (engine quiescing).'),
  thawSeconds: z.number().min(1).max(600).default(30).describe('How long to wait for a thaw to be confirmed.'),
}).strict();

export const configSchema = z.object({
  $schema: z.string().optional(),
  stateDir: z.string().min(1).default('.stillpoint-state').describe('Journal, plugin state and the pack index cache of the repository (beyond a million chunks); relative to the config file.'),
  plugins: z.array(pluginEntrySchema).default([]),
  drivers: z.array(driverSchema).min(1),
  repository: repositoryConfigSchema,
  jobs: z.array(jobSchema).min(1),
  retention: retentionSchema.strict().optional().describe('Default retention for every job.'),
  limits: limitsSchema.default({ perHost: 2, perVolume: 1, perProxy: 2, perRepository: 4, vmsPerSnapshot: 16 }),
  timeouts: timeoutsSchema.default({ freezeSeconds: 20, thawSeconds: 30 }),
}).strict().superRefine((c, ctx) => {
  const dup = (list: Array<{ name: string }>, field: string) => {
    const seen = new Map<string, number>();
    list.forEach((x, i) => {
      const first = seen.get(x.name);
      if (first !== undefined) ctx.addIssue({ code: 'custom', path: [field, i, 'name'], message: `"${x.name}" is already the name of ${field}[${first}]; names must be unique`, input: x.name });
      else seen.set(x.name, i);
    });
  };
  dup(c.drivers, 'drivers');
  dup(c.jobs, 'jobs');
  const drivers = c.drivers.map((d) => d.name);
  c.jobs.forEach((j, i) => {
    if (Array.isArray(j.vms)) return;
    (j.vms.drivers ?? []).forEach((d, k) => {
      if (!drivers.includes(d)) ctx.addIssue({ code: 'custom', path: ['jobs', i, 'vms', 'drivers', k], message: `no driver is named "${d}" (drivers: ${drivers.join(', ')})`, input: d });
    });
  });
});

export type StillpointConfig = z.output<typeof configSchema>;
export type JobConfig = z.output<typeof jobSchema>;
export type DriverConfig = z.output<typeof driverSchema>;
export type PluginEntry = z.output<typeof pluginEntrySchema>;
