import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { isAbsolute, join } from 'node:path';
import createDebug from 'debug';
import { definePlugin } from '../../core/plugin.ts';
import { ConfigError } from '../../core/errors.ts';
import { ProxyClient, type ProxyEndpoint } from './client.ts';
import { offHostOptionsSchema, type ProxySpec } from './options.ts';
import { ProxyPool } from './pool.ts';
import { OffHostTransport } from './transport.ts';

const debug = createDebug('stillpoint:off-host');

/** The `stillpoint` executable of this installation (the default local proxy runs it). */
export const STILLPOINT_BIN = fileURLToPath(new URL('../../core/cli/stillpoint.js', import.meta.url));

/**
 * The default proxy: `stillpoint proxy` started on this machine (in the config's directory), seeing
 * every volume, with the plugins of the same config (found from that directory).
 */
export function localProxy(): ProxySpec {
  return { name: 'local', command: [process.execPath, STILLPOINT_BIN, 'proxy', '--listen', 'stdio', '--name', 'local', '--config-search'], volumes: ['*'], concurrency: 2 };
}

/** How to reach a configured proxy (relative paths resolve against the config's directory). */
export function endpointOf(spec: ProxySpec, configDir: string): ProxyEndpoint {
  if (spec.command) return { command: spec.command, cwd: configDir };
  if (spec.socket) return { socket: isAbsolute(spec.socket) ? spec.socket : join(configDir, spec.socket) };
  if (spec.host !== undefined && spec.port !== undefined) return { host: spec.host, port: spec.port };
  throw new ConfigError([`proxies: proxy "${spec.name}" has no command, socket or host/port`]);
}

function readToken(spec: ProxySpec, configDir: string): string | undefined {
  if (!spec.tokenFile) return undefined;
  const path = isAbsolute(spec.tokenFile) ? spec.tokenFile : join(configDir, spec.tokenFile);
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new ConfigError([`proxies[${spec.name}].tokenFile: cannot read ${path}: ${(error as Error).message}`]);
  }
}

/**
 * The off-host transport plugin: taps `resolveTransport` for mode `offHost` (and `auto`). Each job
 * gets its own proxy pool (restricted to the job's proxy when the job names one); the pool's
 * proxies are told bye when the job is done.
 */
export default definePlugin('off-host', offHostOptionsSchema, (options, context) => {
  const specs = options.proxies ?? [localProxy()];
  const pools = new Map<string, ProxyPool>();
  const connect = async (spec: ProxySpec) => ProxyClient.connect(endpointOf(spec, context.configDir), {
    name: spec.name,
    token: readToken(spec, context.configDir),
    heartbeatMs: options.heartbeatMs,
    deadAfterMs: options.deadAfterMs,
  });
  return {
    name: 'off-host',
    /** Each running job's proxy pool, by run id (for tools and tests that look at the proxies). */
    pools: pools as ReadonlyMap<string, ProxyPool>,
    apply(engine) {
      engine.hooks.resolveTransport.tap('off-host', (request) => {
        if (request.mode !== 'offHost') return undefined;
        const chosen = request.proxy ? specs.filter((s) => s.name === request.proxy) : specs;
        if (request.proxy && chosen.length === 0) {
          throw new ConfigError([`job "${request.job.job}" names proxy "${request.proxy}", which the off-host plugin does not list (it has: ${specs.map((s) => s.name).join(', ')})`]);
        }
        let pool = pools.get(request.job.runId);
        if (!pool) {
          pool = new ProxyPool(chosen, connect);
          pools.set(request.job.runId, pool);
        }
        return new OffHostTransport(engine, pool, { retries: options.retries });
      });
      engine.hooks.jobDone.tapPromise('off-host', async (result) => {
        const pool = pools.get(result.runId);
        pools.delete(result.runId);
        await pool?.close();
        if (pool) debug('job %s: proxies closed', result.runId);
      });
      engine.hooks.shutdown.tapPromise('off-host', async () => {
        const all = [...pools.values()];
        pools.clear();
        await Promise.all(all.map((p) => p.close()));
      });
    },
  };
});

export { OffHostTransport } from './transport.ts';
export { ProxyClient } from './client.ts';
