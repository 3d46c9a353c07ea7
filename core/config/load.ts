import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cosmiconfig, defaultLoaders, type Loader } from 'cosmiconfig';
import createDebug from 'debug';
import { ConfigError } from '../errors.ts';
import { substituteEnv } from './env.ts';
import { formatIssues } from './problems.ts';
import { configSchema, type StillpointConfig } from './schema.ts';

const debug = createDebug('stillpoint:config');

export const MODULE_NAME = 'stillpoint';

/** Where cosmiconfig looks, in order, in each directory from the working directory up to the project root. */
export const SEARCH_PLACES = [
  'package.json',
  `.${MODULE_NAME}rc`, `.${MODULE_NAME}rc.json`, `.${MODULE_NAME}rc.yaml`, `.${MODULE_NAME}rc.yml`,
  `.${MODULE_NAME}rc.js`, `.${MODULE_NAME}rc.ts`, `.${MODULE_NAME}rc.mjs`,
  `${MODULE_NAME}.config.json`, `${MODULE_NAME}.config.yaml`, `${MODULE_NAME}.config.yml`,
  `${MODULE_NAME}.config.js`, `${MODULE_NAME}.config.ts`, `${MODULE_NAME}.config.mjs`,
];

export interface LoadedConfig {
  config: StillpointConfig;
  /** The file the config came from. */
  filepath: string;
  /** Its directory: relative paths in the config resolve against it. */
  configDir: string;
  /** Absolute state directory. */
  stateDir: string;
}

/** ES modules (.js/.mjs/.ts) are imported (tsx handles TypeScript); the default export is the config. */
const importModule: Loader = async (filepath) => {
  const mod = (await import(pathToFileURL(filepath).href)) as { default?: unknown };
  return mod.default ?? mod;
};

/** Validate a parsed config object; every problem at once, each with its path. */
export function parseConfig(raw: unknown, options: { env?: NodeJS.ProcessEnv; where?: string } = {}): StillpointConfig {
  const { value, problems } = substituteEnv(raw, options.env ?? process.env);
  const parsed = configSchema.safeParse(value, { reportInput: true });
  if (!parsed.success) problems.push(...formatIssues(parsed.error.issues, configSchema));
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems, { where: options.where });
  return parsed.data;
}

/** Find (or read `configPath`), parse and validate the config. */
export async function loadConfig(options: { cwd: string; configPath?: string; env?: NodeJS.ProcessEnv }): Promise<LoadedConfig> {
  const explorer = cosmiconfig(MODULE_NAME, {
    searchPlaces: SEARCH_PLACES,
    searchStrategy: 'project',
    loaders: { ...defaultLoaders, '.ts': importModule, '.js': importModule, '.mjs': importModule },
    cache: false,
  });
  let result;
  const file = options.configPath ? resolve(options.cwd, options.configPath) : undefined;
  if (file && !existsSync(file)) {
    throw new ConfigError([`config file not found`], { where: file });
  }
  try {
    result = file ? await explorer.load(file) : await explorer.search(options.cwd);
  } catch (e) {
    throw new ConfigError([`cannot read the config: ${(e as Error).message.split('\n')[0]}`], { where: file ?? options.cwd });
  }
  if (!result || result.isEmpty) {
    if (file) throw new ConfigError(['the config file is empty'], { where: file });
    throw new ConfigError([
      `no config found (looked for ${SEARCH_PLACES.join(', ')} from ${options.cwd} up to the project root); ` +
      'write one with "stillpoint init" or pass --config PATH',
    ]);
  }
  debug('config from %s', result.filepath);
  const config = parseConfig(result.config, { env: options.env, where: result.filepath });
  const configDir = dirname(result.filepath);
  return {
    config, filepath: result.filepath, configDir,
    stateDir: isAbsolute(config.stateDir) ? config.stateDir : resolve(configDir, config.stateDir),
  };
}
