import { createServer, type Server, type Socket } from 'node:net';
import { unlink } from 'node:fs/promises';
import createDebug from 'debug';
import { StillpointError } from '../../core/errors.ts';
import { ProxySession, type ProxySessionOptions } from './session.ts';

const debug = createDebug('stillpoint:proxy');

/** Where `stillpoint proxy` listens: its own stdin/stdout (one session), a unix socket or a TCP port. */
export type ProxyListen = { stdio: true } | { socket: string } | { host: string; port: number };

/** Parses `--listen`: `stdio`, `unix:/path/to.sock` or `tcp:HOST:PORT`. */
export function parseListen(value: string): ProxyListen {
  if (value === 'stdio' || value === '-') return { stdio: true };
  if (value.startsWith('unix:') && value.length > 5) return { socket: value.slice(5) };
  const m = /^tcp:(.+):(\d{1,5})$/.exec(value);
  if (m) {
    const port = Number(m[2]);
    if (port > 65535) throw new StillpointError(`port ${port} is out of range`, { where: '--listen' });
    return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port };
  }
  throw new StillpointError(`"${value}" is not an address to listen on`, {
    where: '--listen',
    hint: 'use stdio, unix:/path/to.sock or tcp:HOST:PORT',
  });
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

export interface RunningProxy {
  /** Resolves when the proxy stops (stdio: the coordinator hung up; sockets: close() was called). */
  stopped: Promise<void>;
  /** The bound address (sockets). */
  address?: string;
  close(): Promise<void>;
}

/**
 * Runs the proxy: over stdio, one session that ends when stdin ends; on a socket, one session
 * per connection. A TCP listener on an address other than loopback requires a token.
 */
export async function startProxy(listen: ProxyListen, options: ProxySessionOptions): Promise<RunningProxy> {
  if ('stdio' in listen) {
    const session = new ProxySession(process.stdin, process.stdout, options);
    return { stopped: session.finished, close: async () => { process.stdin.destroy(); await session.finished; } };
  }
  if ('host' in listen && !isLoopback(listen.host) && options.token === undefined) {
    throw new StillpointError(`refusing to listen on ${listen.host}:${listen.port} without a token`, {
      where: '--listen',
      hint: 'give --token-file FILE (the coordinator sends the same token), or listen on loopback or a unix socket',
    });
  }
  const sessions = new Map<ProxySession, Socket>();
  const server: Server = createServer((socket) => {
    debug('connection from %s', socket.remoteAddress ?? 'unix socket');
    const session = new ProxySession(socket, socket, options);
    sessions.set(session, socket);
    void session.finished.then(() => sessions.delete(session));
  });
  if ('socket' in listen) await unlink(listen.socket).catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('socket' in listen) server.listen(listen.socket, resolve);
    else server.listen(listen.port, listen.host, resolve);
  });
  const bound = server.address();
  const address = typeof bound === 'string' ? `unix:${bound}` : bound ? `tcp:${bound.address}:${bound.port}` : undefined;
  debug('listening on %s', address);
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => { resolveStopped = resolve; });
  return {
    stopped,
    address,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Ending a session's connection aborts its running tasks (they report failed, then settle).
      for (const socket of sessions.values()) socket.end();
      await Promise.all([...sessions.keys()].map((s) => s.finished));
      await closed;
      if ('socket' in listen) await unlink(listen.socket).catch(() => undefined);
      resolveStopped();
    },
  };
}
