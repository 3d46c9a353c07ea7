import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import createDebug from 'debug';
import type { StillpointConfig } from '../config/schema.ts';
import { formatIssues } from '../config/problems.ts';
import type { Engine } from '../engine/engine.ts';
import { ConfigError } from '../errors.ts';
import type { PluginContext, PluginFactory } from '../plugin.ts';
import { builtinAvailable, builtinPath, DEFAULT_PLUGINS, isBuiltin } from './builtins.ts';

const debug = createDebug('stillpoint:plugins');

export interface PluginRequest {
  /** Built-in short name, npm package name, or path. */
  use: string;
  options: Record<string, unknown>;
  /** Config path of the entry, for messages (e.g. `plugins[2]`, or `drivers[0].type` when implied). */
  where: string;
  /** Implied by a driver/storage type or a default: skipped quietly when not installed. */
  implied?: boolean;
}

/** The plugins a config asks for: its `plugins`, plus built-ins implied by driver and storage types and defaults. */
export function pluginRequests(config: StillpointConfig): PluginRequest[] {
  const requests: PluginRequest[] = config.plugins.map((p, i) =>
    typeof p === 'string' ? { use: p, options: {}, where: `plugins[${i}]` } : { use: p.use, options: p.options, where: `plugins[${i}]` });
  const listed = (name: string) => requests.some((r) => r.use === name);
  const imply = (name: string, where: string, optional: boolean) => {
    if (isBuiltin(name) && !listed(name)) requests.push({ use: name, options: {}, where, implied: optional });
  };
  config.drivers.forEach((d, i) => imply(d.type, `drivers[${i}].type`, false));
  imply(config.repository.storage.type, 'repository.storage.type', false);
  for (const name of DEFAULT_PLUGINS) imply(name, 'default plugins', true);
  return requests;
}

/** Where a request's module is: a built-in's file, a path (relative to the config), or an npm package. */
function locate(request: PluginRequest, configDir: string): { specifier: string; source: string } {
  const { use } = request;
  if (isBuiltin(use)) {
    if (!builtinAvailable(use)) {
      throw new ConfigError([`${request.where}: built-in plugin "${use}" is not in this installation (${builtinPath(use)} is missing)`]);
    }
    return { specifier: pathToFileURL(builtinPath(use)).href, source: `built-in ${use}` };
  }
  if (use.startsWith('.') || isAbsolute(use)) {
    const file = resolve(configDir, use);
    if (!existsSync(file)) throw new ConfigError([`${request.where}: plugin file ${file} does not exist`]);
    return { specifier: pathToFileURL(file).href, source: file };
  }
  try {
    return { specifier: pathToFileURL(createRequire(join(configDir, 'noop.js')).resolve(use)).href, source: `npm ${use}` };
  } catch {
    return { specifier: use, source: `npm ${use}` }; // ESM-only packages: let import() resolve it
  }
}

function isFactory(x: unknown): x is PluginFactory {
  return typeof x === 'function' && typeof (x as { optionsSchema?: { safeParse?: unknown } }).optionsSchema?.safeParse === 'function';
}

/**
 * Load every plugin the config asks for, validate each one's options against its own schema
 * (every problem of every plugin reported at once, by path) and apply them to the engine.
 */
export async function loadPlugins(engine: Engine, config: StillpointConfig, context: PluginContext): Promise<void> {
  const problems: string[] = [];
  const ready: Array<{ factory: PluginFactory; options: unknown; source: string }> = [];
  for (const request of pluginRequests(config)) {
    if (request.implied && isBuiltin(request.use) && !builtinAvailable(request.use)) {
      debug('default plugin %s is not installed; skipped', request.use);
      continue;
    }
    try {
      const { specifier, source } = locate(request, context.configDir);
      let mod: { default?: unknown };
      try {
        mod = (await import(specifier)) as { default?: unknown };
      } catch (e) {
        problems.push(`${request.where}: cannot load plugin "${request.use}": ${(e as Error).message.split('\n')[0]}`);
        continue;
      }
      const factory = mod.default;
      if (!isFactory(factory)) {
        problems.push(`${request.where}: "${request.use}" does not export a plugin factory as its default export (make one with definePlugin(name, optionsSchema, factory) from core/plugin.ts)`);
        continue;
      }
      const parsed = factory.optionsSchema.safeParse(request.options, { reportInput: true });
      if (!parsed.success) {
        const prefix = request.where.startsWith('plugins[') ? [...request.where.replace(/\[(\d+)\]/, '.$1').split('.').map((s) => (/^\d+$/.test(s) ? Number(s) : s)), 'options'] : [`(plugin ${request.use} options)`];
        problems.push(...formatIssues(parsed.error.issues, factory.optionsSchema, prefix));
        continue;
      }
      ready.push({ factory, options: parsed.data, source });
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems);
      else throw e;
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  for (const { factory, options, source } of ready) {
    await engine.use(factory(options, context), source);
  }
  await engine.start();
}
