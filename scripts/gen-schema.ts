/**
 * Writes config/schema.json from the config's zod schema (core/config/schema.ts), so the schema is
 * written once. Run: npx tsx scripts/gen-schema.ts   (test/core/schema.test.ts checks it is current)
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { configJsonSchema } from '../core/config/json-schema.ts';

const target = fileURLToPath(new URL('../config/schema.json', import.meta.url));
writeFileSync(target, configJsonSchema());
console.log(`wrote ${target}`);
