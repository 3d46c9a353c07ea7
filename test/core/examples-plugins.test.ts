/**
 * The shipped configs (config/default.yaml, config/examples/*) are valid all the way down: besides
 * the config schema (examples.test.ts), every built-in plugin's options, driver options and storage
 * options are checked against the schemas the plugins validate them with.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import test from 'ava';
import { defaultLoaders } from 'cosmiconfig';
import type { z } from 'zod';
import { parseConfig } from '../../core/config/load.ts';
import { builtinPath, isBuiltin } from '../../core/plugins/builtins.ts';
import { pluginRequests } from '../../core/plugins/loader.ts';
import type { PluginFactory } from '../../core/plugin.ts';
import { labDriverOptionsSchema } from '../../plugins/lab/index.ts';
import { hypervDriverOptionsSchema } from '../../plugins/hyperv/index.ts';
import { localStorageOptionsSchema } from '../../plugins/local/index.ts';
import { sftpStorageOptionsSchema } from '../../plugins/sftp/index.ts';

const dir = new URL('../../config/', import.meta.url);
const env = { HYPERV_PASSWORD: 'x', AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'x' };
const driverOptions: Record<string, z.ZodType> = { lab: labDriverOptionsSchema, hyperv: hypervDriverOptionsSchema };
const storageOptions: Record<string, z.ZodType> = { local: localStorageOptionsSchema, sftp: sftpStorageOptionsSchema };

const problems = (where: string, r: { success: boolean; error?: { issues: Array<{ path: PropertyKey[]; message: string }> } }) =>
  r.success ? [] : r.error!.issues.map((i) => `${[where, ...i.path].join('.')}: ${i.message}`);

const files = ['default.yaml', ...readdirSync(new URL('examples/', dir)).map((f) => `examples/${f}`)];
for (const file of files) {
  test(`config/${file}: built-in plugin, driver and storage options are valid`, async (t) => {
    const path = fileURLToPath(new URL(file, dir));
    const config = parseConfig(defaultLoaders['.yaml'](path, readFileSync(path, 'utf8')), { env, where: file });
    const found: string[] = [];
    for (const request of pluginRequests(config)) {
      if (!isBuiltin(request.use)) continue; // a team's own plugin (e.g. ./plugins/s3-storage.ts) is not shipped
      const factory = (await import(pathToFileURL(builtinPath(request.use)).href)).default as PluginFactory;
      found.push(...problems(`${request.where} (${request.use}) options`, factory.optionsSchema.safeParse(request.options)));
    }
    config.drivers.forEach((d, i) => {
      const schema = driverOptions[d.type];
      if (schema) found.push(...problems(`drivers[${i}].options`, schema.safeParse(d.options)));
      else t.log(`drivers[${i}]: type ${d.type} is not a built-in driver; its options are not checked here`);
    });
    const storage = config.repository.storage;
    const schema = storageOptions[storage.type];
    if (schema) found.push(...problems('repository.storage.options', schema.safeParse(storage.options)));
    t.deepEqual(found, []);
  });
}
