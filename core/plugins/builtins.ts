import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Built-in plugins by short name -> module (plugins/<name>/index.ts), imported lazily so a
 * plugin that is not in this installation gives a clear error only when it is asked for.
 */
export const BUILTIN_PLUGINS = {
  vhdx: 'VHDX disk reader (native library)',
  lab: 'lab simulator: a simulated Hyper-V host on real VHDX files',
  local: 'local filesystem storage target',
  sftp: 'SFTP storage target',
  fsfreeze: 'Linux guest quiescing with fsfreeze',
  hyperv: 'Hyper-V driver (PowerShell)',
  vss: 'Windows guest quiescing and volume snapshots with VSS',
  btrfs: 'btrfs volume snapshots',
  'off-host': 'off-host transport: proxies read from volume snapshots',
} as const;

export type BuiltinName = keyof typeof BUILTIN_PLUGINS;

/** Loaded when the config does not list them: the disk reader every driver needs. */
export const DEFAULT_PLUGINS: BuiltinName[] = ['vhdx'];

export function isBuiltin(name: string): name is BuiltinName {
  return Object.hasOwn(BUILTIN_PLUGINS, name);
}

export function builtinPath(name: BuiltinName): string {
  return fileURLToPath(new URL(`../../plugins/${name}/index.ts`, import.meta.url));
}

export function builtinAvailable(name: BuiltinName): boolean {
  return existsSync(builtinPath(name));
}
