import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import createDebug from 'debug';
import { loadConfig } from '../../core/config/load.ts';
import { Engine } from '../../core/engine/engine.ts';
import { loadPlugins } from '../../core/plugins/loader.ts';
import { ConfigError, StillpointError } from '../../core/errors.ts';
import type { PluginFactory } from '../../core/plugin.ts';
import { createTaskRunner } from './runner.ts';
import { startProxy, type ProxyListen, type RunningProxy } from './server.ts';

const debug = createDebug('stillpoint:proxy');

const PLUGINS_DIR = fileURLToPath(new URL('../', import.meta.url));

/** Plugins a proxy loads by default: the disk readers and storage targets that ship with Stillpoint. */
export const DEFAULT_PROXY_PLUGINS = ['vhdx', 'local', 'sftp'];

/** Where a plugin named on the command line lives: a built-in short name, or a module path. */
export function pluginModule(spec: string, cwd: string): string | undefined {
  if (/^[a-z][a-z0-9-]*$/.test(spec)) {
    const builtin = join(PLUGINS_DIR, spec, 'index.ts');
    return existsSync(builtin) ? builtin : undefined;
  }
  const path = isAbsolute(spec) ? spec : resolve(cwd, spec);
  return existsSync(path) ? path : undefined;
}

export interface ProxyMainOptions {
  listen: ProxyListen;
  name: string;
  concurrency: number;
  tokenFile?: string;
  passphraseEnv?: string;
  /** Plugins to load (short names or paths); undefined: the default set, those that are installed. */
  plugins?: string[];
  /**
   * Load the plugins of a config instead (the coordinator's, so custom storage targets and readers
   * are there too): a path, or `true` to search from `cwd` as `stillpoint backup` does.
   */
  config?: string | true;
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Where the proxy's human messages go (never stdout in stdio mode: that is the protocol). */
  log(line: string): void;
}

/** Builds the proxy's engine (readers, storage targets) and runs the proxy until it stops. */
export async function runProxyMain(options: ProxyMainOptions): Promise<RunningProxy> {
  const engine = new Engine();
  let configDir = options.cwd;
  let stateDir = options.env.STILLPOINT_STATE_DIR ?? join(homedir(), '.local', 'state', 'stillpoint');
  const loaded: string[] = [];
  if (options.config !== undefined) {
    if (options.plugins) throw new ConfigError(['--plugins and --config exclude each other: a proxy loads either the listed plugins or those of a config']);
    const config = await loadConfig({ cwd: options.cwd, configPath: options.config === true ? undefined : options.config, env: options.env });
    configDir = config.configDir;
    stateDir = config.stateDir;
    await loadPlugins(engine, config.config, { configDir, stateDir: config.stateDir });
    loaded.push(...engine.plugins.filter((p) => p.hooks.includes('resolveReader') || p.hooks.includes('resolveStorage')).map((p) => p.name));
  }
  const specs = options.config !== undefined ? [] : options.plugins ?? DEFAULT_PROXY_PLUGINS;
  const context = { configDir: options.cwd, stateDir };
  for (const spec of specs) {
    const path = pluginModule(spec, options.cwd);
    if (!path) {
      if (options.plugins) throw new ConfigError([`--plugins: "${spec}" is neither a built-in plugin nor a file`]);
      debug('default plugin %s is not installed', spec);
      continue;
    }
    const mod = (await import(pathToFileURL(path).href)) as { default?: PluginFactory };
    const factory = mod.default;
    if (typeof factory !== 'function' || !factory.optionsSchema) {
      throw new ConfigError([`--plugins: ${path} does not export a plugin factory (definePlugin) as its default export`]);
    }
    const parsed = factory.optionsSchema.safeParse({});
    if (!parsed.success) throw new ConfigError([`--plugins: plugin "${spec}" needs options; a proxy loads plugins with their defaults`]);
    await engine.use(factory(parsed.data, context), spec);
    loaded.push(spec);
  }
  if (!loaded.length) throw new StillpointError('the proxy loaded no plugin: it can read no disk and reach no storage', { hint: 'give --plugins vhdx,local (or the plugins your repository needs)' });
  if (options.config === undefined) await engine.start();
  let token: string | undefined;
  if (options.tokenFile) {
    try {
      token = readFileSync(options.tokenFile, 'utf8').trim();
    } catch (error) {
      throw new ConfigError([`--token-file: cannot read ${options.tokenFile}: ${(error as Error).message}`]);
    }
    if (!token) throw new ConfigError([`--token-file: ${options.tokenFile} is empty`]);
  }
  const runner = createTaskRunner(engine, { passphraseEnv: options.passphraseEnv, env: options.env, configDir, cacheDir: join(stateDir, 'cache') });
  const running = await startProxy(options.listen, { name: options.name, concurrency: options.concurrency, runner, token });
  options.log(`stillpoint proxy "${options.name}" (pid ${process.pid}, plugins: ${loaded.join(', ') || 'none'}) ${running.address ? `listening on ${running.address}` : 'on stdio'}`);
  void running.stopped.finally(async () => {
    await runner.close().catch((error: unknown) => debug('closing repositories: %s', (error as Error).message));
    await engine.close().catch(() => undefined);
  });
  return running;
}
