import { ConfigError } from '../../errors.ts';
import { BUILTIN_PLUGINS, builtinAvailable, type BuiltinName } from '../../plugins/builtins.ts';
import { Session } from '../../session.ts';
import { EXIT, type CliCommand } from '../command.ts';
import { table } from '../output.ts';
import { configOption, parse, reportError } from './common.ts';

const usage = 'Usage: stillpoint plugins [--config PATH] [--json]\n  Lists the plugins the config loads and the hooks each taps; without a config, the built-in plugins.';

export const pluginsCommand: CliCommand = {
  name: 'plugins',
  summary: 'list loaded plugins and the hooks each taps',
  usage,
  async run(argv, io) {
    const args = parse(argv, { ...configOption, json: { type: 'boolean' } }, usage, io, false);
    if (!args) return EXIT.usage;
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    const builtins = (Object.keys(BUILTIN_PLUGINS) as BuiltinName[]).map((n) => ({ name: n, description: BUILTIN_PLUGINS[n], installed: builtinAvailable(n) }));
    let session: Session | undefined;
    try {
      session = await Session.open({ cwd: io.cwd, configPath: args.values.config, env: io.env });
    } catch (e) {
      const noConfig = e instanceof ConfigError && !args.values.config && e.message.startsWith('no config found');
      if (!noConfig) return reportError(e, io);
    }
    try {
      const loaded = session?.engine.plugins ?? [];
      if (args.values.json) {
        io.stdout.write(`${JSON.stringify({ config: session?.loaded.filepath ?? null, loaded, builtins }, null, 2)}\n`);
        return EXIT.ok;
      }
      if (session) {
        io.stdout.write(`plugins loaded by ${session.loaded.filepath}:\n`);
        io.stdout.write(`${table(['PLUGIN', 'SOURCE', 'HOOKS'], loaded.map((p) => [p.name, p.source, p.hooks.join(', ') || '(none)']))}\n\n`);
      } else {
        io.stdout.write('no config found; built-in plugins:\n');
      }
      io.stdout.write(`${table(['BUILT-IN', 'INSTALLED', 'WHAT'], builtins.map((b) => [b.name, b.installed ? 'yes' : 'no', b.description]))}\n`);
      return EXIT.ok;
    } finally {
      await session?.close().catch(() => {});
    }
  },
};
