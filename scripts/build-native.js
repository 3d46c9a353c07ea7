#!/usr/bin/env node
// Builds the native libraries of the project's plugins (cargo, standard library only).
// Run by `npm install` (prepare) and `npm run build:native`.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const crates = ['core/native', 'plugins/vhdx/native'];
for (const crate of crates) {
  const dir = join(root, crate);
  if (!existsSync(join(dir, 'Cargo.toml'))) continue;
  console.log(`stillpoint: building ${crate} (cargo build --release)`);
  execFileSync('cargo', ['build', '--release', '--offline', '--manifest-path', join(dir, 'Cargo.toml')], { stdio: 'inherit' });
}
