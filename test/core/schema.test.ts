import { readFileSync } from 'node:fs';
import test from 'ava';
import { configJsonSchema } from '../../core/config/json-schema.ts';

test('config/schema.json is generated from the zod schema and up to date', (t) => {
  const committed = readFileSync(new URL('../../config/schema.json', import.meta.url), 'utf8');
  t.true(committed === configJsonSchema(), 'config/schema.json is stale: run `npx tsx scripts/gen-schema.ts`');
});
