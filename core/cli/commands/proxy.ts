import { hostname } from 'node:os';
import { EXIT, type CliCommand } from '../command.ts';
import { parse } from './common.ts';
import { parseListen } from '../../../plugins/off-host/server.ts';
import { runProxyMain } from '../../../plugins/off-host/proxy-main.ts';

const usage = `Usage: stillpoint proxy [options]

Runs an off-host backup proxy: it takes read tasks from a coordinator (stillpoint backup with the
off-host transport) over the protocol in docs/proxy-protocol.md, reads the disks from the presented
volume snapshot and stores them into the repository itself.

Options:
  --listen ADDR          stdio (default: one session on stdin/stdout), unix:/path/to.sock or tcp:HOST:PORT
  --name NAME            the proxy's name (default: this host's name)
  --concurrency N        tasks run at once; more are queued (default 2)
  --token-file FILE      require this shared secret from coordinators (required for TCP off loopback)
  --passphrase-env VAR   the repository passphrase, when the coordinator does not send it (TCP)
  --plugins LIST         comma-separated plugins to load: built-in names or module paths
                         (default: vhdx,local,sftp, those installed)
  --config PATH          load the plugins of this config instead (the coordinator's config)
  --config-search        load the plugins of the config found from the working directory
`;

export const proxyCommand: CliCommand = {
  name: 'proxy',
  summary: 'Run an off-host backup proxy (reads disks from volume snapshots, stores them)',
  usage,
  async run(argv, io) {
    const parsed = parse(argv, {
      listen: { type: 'string', default: 'stdio' },
      name: { type: 'string' },
      concurrency: { type: 'string', default: '2' },
      'token-file': { type: 'string' },
      'passphrase-env': { type: 'string' },
      plugins: { type: 'string' },
      config: { type: 'string', short: 'c' },
      'config-search': { type: 'boolean' },
    }, usage, io, false);
    if (!parsed) return EXIT.usage;
    const { values } = parsed;
    if (values.help) {
      io.stdout.write(usage);
      return EXIT.ok;
    }
    const concurrency = Number(values.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      io.stderr.write(`stillpoint proxy: --concurrency: expected a positive integer, got "${values.concurrency}"\n`);
      return EXIT.usage;
    }
    try {
      const listen = parseListen(values.listen!);
      // In stdio mode stdout carries the protocol: every human message goes to stderr.
      const log = (line: string) => ('stdio' in listen ? io.stderr : io.stdout).write(line + '\n');
      const running = await runProxyMain({
        listen,
        name: values.name ?? hostname(),
        concurrency,
        tokenFile: values['token-file'],
        passphraseEnv: values['passphrase-env'],
        plugins: values.plugins?.split(',').map((s) => s.trim()).filter(Boolean),
        config: values.config ?? (values['config-search'] ? true : undefined),
        cwd: io.cwd,
        env: io.env,
        log,
      });
      const stop = () => { void running.close(); };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await running.stopped;
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      return EXIT.ok;
    } catch (error) {
      io.stderr.write(`stillpoint proxy: ${(error as Error).message}\n`);
      return EXIT.failure;
    }
  },
};
