/**
 * A process that freezes one VM through the fsfreeze plugin (loaded the way Stillpoint loads it:
 * options parsed by the plugin's schema, applied to an Engine, quiescer found through
 * resolveQuiescer), prints `frozen`, and thaws when it reads `thaw` on stdin (printing
 * `outcome <json>`). The tests kill or stop it to check the watchdog.
 */
import { Engine } from '../../core/engine/engine.ts';
import fsfreeze from '../../plugins/fsfreeze/index.ts';
import type { VmFacts } from '../../core/contracts/vm.ts';

const request = JSON.parse(process.argv[2] ?? '{}') as {
  options: unknown;
  vm: VmFacts;
  deadlineMs: number;
  configDir: string;
  stateDir: string;
};

const engine = new Engine();
const plugin = fsfreeze(fsfreeze.optionsSchema.parse(request.options), { configDir: request.configDir, stateDir: request.stateDir });
await plugin.apply(engine);
const quiescer = engine.hooks.resolveQuiescer.call(request.vm);
if (!quiescer) throw new Error(`no quiescer for ${request.vm.name}`);
try {
  const frozen = await quiescer.freeze(request.vm, { deadlineMs: request.deadlineMs });
  process.stdout.write('frozen\n');
  let input = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', async (chunk: string) => {
    input += chunk;
    if (input.includes('thaw\n')) {
      input = '';
      const outcome = await frozen.thaw();
      process.stdout.write(`outcome ${JSON.stringify(outcome)}\n`);
    }
  });
} catch (error) {
  process.stdout.write(`failed ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
