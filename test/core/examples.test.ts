import { readdirSync, readFileSync } from 'node:fs';
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { defaultLoaders } from 'cosmiconfig';
import { parseConfig } from '../../core/config/load.ts';

const dir = new URL('../../config/', import.meta.url);
const env = { HYPERV_PASSWORD: 'x', AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'x' };

const files = ['default.yaml', ...readdirSync(new URL('examples/', dir)).map((f) => `examples/${f}`)];
for (const file of files) {
  test(`config/${file} is a valid config`, (t) => {
    const path = fileURLToPath(new URL(file, dir));
    const raw = defaultLoaders['.yaml'](path, readFileSync(path, 'utf8'));
    t.notThrows(() => parseConfig(raw, { env, where: file }));
  });
}
