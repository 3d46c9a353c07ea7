import { z } from 'zod';
import { configSchema } from './schema.ts';

/** The JSON Schema of the config file (what editors use), generated from the zod schema. */
export function configJsonSchema(): string {
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return `${JSON.stringify({ ...schema, $id: 'https://stillpoint.dev/schema/config.json', title: 'Stillpoint configuration' }, null, 2)}\n`;
}
