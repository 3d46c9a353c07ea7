import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { definePlugin } from '../../core/plugin.ts';
import { ConfigError } from '../../core/errors.ts';
import { LocalStorage } from './storage.ts';

export { LocalStorage } from './storage.ts';

/** `repository.storage.options` when `type` is "local". */
export const localStorageOptionsSchema = z.object({
  /** Directory of the repository (relative paths resolve against the config file's directory). */
  path: z.string().min(1),
}).strict();

/** The local filesystem storage target: serves `repository.storage` entries of type "local". */
export default definePlugin('local', z.object({}).strict().default({}), (_options, context) => ({
  name: 'local',
  apply(engine) {
    engine.hooks.resolveStorage.tap('local', (spec) => {
      if (spec.type !== 'local') return undefined;
      const parsed = localStorageOptionsSchema.safeParse(spec.options);
      if (!parsed.success) {
        throw new ConfigError(parsed.error.issues.map((i) => `repository.storage.options.${i.path.join('.')}: ${i.message}`));
      }
      const path = isAbsolute(parsed.data.path) ? parsed.data.path : join(context.configDir, parsed.data.path);
      return new LocalStorage(path);
    });
  },
}));
