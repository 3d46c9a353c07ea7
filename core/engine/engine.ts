import { createHooks, type EngineHooks } from './hooks.ts';

/**
 * The engine: holds the hooks; `runJob` (core/engine/pipeline.ts) runs a job through them.
 * (Skeleton; the core-engine work fills in the pipeline.)
 */
export class Engine {
  readonly hooks: EngineHooks = createHooks();
}
