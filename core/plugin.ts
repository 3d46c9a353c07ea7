import type { z } from 'zod';
import type { Engine } from './engine/engine.ts';

/**
 * A Stillpoint plugin: an object with a `name` and `apply(engine)` that taps the engine's hooks by
 * name (see `core/engine/hooks.ts` for every hook, its kind, arguments and when it runs).
 */
export interface StillpointPlugin {
  readonly name: string;
  apply(engine: Engine): void | Promise<void>;
}

/** What a plugin factory receives besides its options. */
export interface PluginContext {
  /** Directory of the config file (relative paths in options resolve against it). */
  configDir: string;
  /** Stillpoint's state directory (journal, locks, plugin state). */
  stateDir: string;
}

/**
 * A plugin module's default export: a factory with the zod schema of its options.
 * The loader validates the options against `optionsSchema` (every problem reported with its path)
 * before calling the factory with the parsed value.
 */
export interface PluginFactory<Schema extends z.ZodType = z.ZodType> {
  (options: z.output<Schema>, context: PluginContext): StillpointPlugin;
  readonly optionsSchema: Schema;
  /** Built-in short name, e.g. "lab", "vhdx", "local". */
  readonly pluginName: string;
}

/** Helper that attaches the schema and name to a factory with the right types. */
export function definePlugin<Schema extends z.ZodType>(
  pluginName: string,
  optionsSchema: Schema,
  factory: (options: z.output<Schema>, context: PluginContext) => StillpointPlugin,
): PluginFactory<Schema> {
  return Object.assign(factory, { optionsSchema, pluginName });
}
