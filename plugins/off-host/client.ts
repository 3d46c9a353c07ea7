import { spawn, type ChildProcess } from 'node:child_process';
import { connect as netConnect, type Socket } from 'node:net';
import { hostname } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import createDebug from 'debug';
import { CorruptImageError, NotFoundError, StillpointError, TransientError } from '../../core/errors.ts';
import {
  PROTOCOL_VERSION, LineDecoder, ProtocolError, encodeMessage, parseProxyMessage,
  type CoordinatorMessage, type ErrorInfo, type ProxyMessage, type TaskMessage, type WelcomeMessage,
} from './protocol.ts';

const debug = createDebug('stillpoint:off-host');

/** How to reach a proxy: start it (locally or through ssh) and speak over its stdio, or connect to a socket. */
export type ProxyEndpoint =
  | { command: string[]; env?: Record<string, string>; cwd?: string }
  | { socket: string }
  | { host: string; port: number };

/** The connection to a proxy ended (process died, socket closed, no heartbeat): the task may go to another proxy. */
export class ProxyLostError extends TransientError {}

/** A task failed on the proxy: the proxy's error, named with the proxy. */
export class ProxyTaskError extends StillpointError {
  readonly retryable: boolean;
  readonly remote: ErrorInfo;
  constructor(proxy: string, info: ErrorInfo, retryable: boolean) {
    super(info.message, { where: `proxy "${proxy}"` });
    this.remote = info;
    this.retryable = retryable;
  }
}

/** The error a failed task rejects with: the same class as on the proxy where it is one of Stillpoint's. */
function taskError(proxy: string, info: ErrorInfo, retryable: boolean): Error {
  const where = `proxy "${proxy}"`;
  switch (info.name) {
    case 'TransientError': return new TransientError(info.message, { where });
    case 'NotFoundError': return new NotFoundError(info.message, { where });
    case 'CorruptImageError': return new CorruptImageError(info.message, { where });
    default: return new ProxyTaskError(proxy, info, retryable);
  }
}

export interface DiskStored {
  diskId: string;
  record: unknown;
  bytesRead: number;
  bytesStored: number;
  durationMs: number;
}

export interface RunTaskOptions {
  onProgress?(progress: { diskId: string; bytesRead: number; bytesStored: number; totalBytes: number }): void;
  onDisk?(disk: DiskStored): void;
  signal?: AbortSignal;
}

interface PendingTask {
  resolve(disks: DiskStored[]): void;
  reject(error: Error): void;
  disks: DiskStored[];
  options: RunTaskOptions;
}

export interface ProxyClientOptions {
  /** The proxy's configured name (used in errors until the proxy's welcome names it). */
  name: string;
  token?: string;
  /** Interval of heartbeat pings. */
  heartbeatMs?: number;
  /** Declare the proxy lost when nothing arrived for this long. */
  deadAfterMs?: number;
  /** How long the hello may take. */
  connectTimeoutMs?: number;
  maxLineBytes?: number;
}

/**
 * The coordinator's side of one connection to a proxy: hello/welcome, tasks with their progress
 * and disk records, heartbeats, and the detection of a proxy that went away (every task still
 * running then rejects with ProxyLostError).
 */
export class ProxyClient {
  readonly name: string;
  welcome?: WelcomeMessage;
  readonly #in: Readable;
  readonly #out: Writable;
  readonly #child?: ChildProcess;
  readonly #options: ProxyClientOptions;
  readonly #decoder: LineDecoder;
  readonly #pending = new Map<string, PendingTask>();
  #welcomeWaiter?: { resolve(w: WelcomeMessage): void; reject(e: Error): void };
  #lost?: ProxyLostError;
  #lastHeard = Date.now();
  #heartbeat?: NodeJS.Timeout;
  #seq = 0;
  #stderrTail = '';
  #closing = false;
  readonly closed: Promise<void>;
  #resolveClosed!: () => void;

  constructor(input: Readable, output: Writable, options: ProxyClientOptions, child?: ChildProcess) {
    this.name = options.name;
    this.#in = input;
    this.#out = output;
    this.#options = options;
    this.#child = child;
    this.#decoder = new LineDecoder(options.maxLineBytes);
    this.closed = new Promise((resolve) => { this.#resolveClosed = resolve; });
    input.on('data', (chunk: Buffer) => this.#onData(chunk));
    input.on('end', () => this.#ended('the connection was closed'));
    input.on('close', () => this.#ended('the connection was closed'));
    input.on('error', (error) => this.#lose(`connection error: ${error.message}`));
    output.on('error', (error) => this.#lose(`connection error: ${error.message}`));
    if (child) {
      child.stderr?.on('data', (chunk: Buffer) => {
        this.#stderrTail = (this.#stderrTail + chunk.toString('utf8')).slice(-2000);
        debug('[proxy %s] %s', this.name, chunk.toString('utf8').trimEnd());
      });
      child.on('exit', (code, signal) => this.#lose(signal ? `the proxy process was killed by ${signal}` : `the proxy process exited with status ${code}`));
      child.on('error', (error) => this.#lose(`the proxy process could not run: ${error.message}`));
    }
  }

  /** Starts or connects to the proxy at `endpoint` and completes the hello. */
  static async connect(endpoint: ProxyEndpoint, options: ProxyClientOptions): Promise<ProxyClient> {
    let client: ProxyClient;
    if ('command' in endpoint) {
      const [program, ...args] = endpoint.command;
      if (!program) throw new StillpointError('the proxy command is empty', { where: `proxy "${options.name}"` });
      const child = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...endpoint.env }, cwd: endpoint.cwd });
      client = new ProxyClient(child.stdout!, child.stdin!, options, child);
    } else {
      const socket: Socket = 'socket' in endpoint ? netConnect(endpoint.socket) : netConnect(endpoint.port, endpoint.host);
      client = new ProxyClient(socket, socket, options);
    }
    await client.hello();
    return client;
  }

  get pid(): number | undefined {
    return this.#child?.pid ?? this.welcome?.pid;
  }

  get alive(): boolean {
    return !this.#lost;
  }

  /** Sends hello and waits for welcome. */
  hello(): Promise<WelcomeMessage> {
    const timeoutMs = this.#options.connectTimeoutMs ?? 30_000;
    return new Promise<WelcomeMessage>((resolve, reject) => {
      if (this.#lost) return reject(this.#lost);
      const timer = setTimeout(() => {
        this.#lose(`no welcome within ${timeoutMs} ms`);
      }, timeoutMs);
      this.#welcomeWaiter = {
        resolve: (w) => { clearTimeout(timer); resolve(w); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      this.#write({ type: 'hello', protocol: PROTOCOL_VERSION, client: `${hostname()}:${process.pid}`, ...(this.#options.token !== undefined ? { token: this.#options.token } : {}) });
    }).then((welcome) => {
      this.welcome = welcome;
      this.#startHeartbeat();
      return welcome;
    });
  }

  /** Runs one task on the proxy; resolves with each disk's record once the proxy says `done`. */
  runTask(task: Omit<TaskMessage, 'type'>, options: RunTaskOptions = {}): Promise<DiskStored[]> {
    if (this.#lost) return Promise.reject(this.#lost);
    if (this.#pending.has(task.id)) return Promise.reject(new StillpointError(`task "${task.id}" is already running on proxy "${this.name}"`));
    return new Promise<DiskStored[]>((resolve, reject) => {
      const onAbort = () => this.#write({ type: 'cancel', id: task.id, reason: String((options.signal?.reason as Error)?.message ?? 'cancelled') });
      options.signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => options.signal?.removeEventListener('abort', onAbort);
      this.#pending.set(task.id, {
        resolve: (d) => { done(); resolve(d); },
        reject: (e) => { done(); reject(e); },
        disks: [],
        options,
      });
      this.#write({ type: 'task', ...task });
      if (options.signal?.aborted) onAbort();
    });
  }

  /** Says bye and waits for the proxy to close the connection (a spawned proxy exits). */
  async close(timeoutMs = 10_000): Promise<void> {
    if (!this.#lost) {
      this.#write({ type: 'bye' });
      this.#closing = true;
      this.#out.end();
      const timer = setTimeout(() => this.kill(), timeoutMs);
      await this.closed;
      clearTimeout(timer);
    }
  }

  /** Ends the connection at once (and kills a proxy process this client started). */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.#child && this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill(signal);
    this.#in.destroy();
    this.#out.destroy();
    this.#lose(`the connection was ended by the coordinator`);
  }

  #write(message: CoordinatorMessage): void {
    if (this.#lost || (this.#out as Writable & { destroyed?: boolean }).destroyed || this.#out.writableEnded) return;
    this.#out.write(encodeMessage(message));
  }

  #startHeartbeat(): void {
    const every = this.#options.heartbeatMs ?? 5_000;
    const deadAfter = this.#options.deadAfterMs ?? 30_000;
    this.#heartbeat = setInterval(() => {
      if (Date.now() - this.#lastHeard > deadAfter) {
        this.kill();
        this.#lose(`no answer for ${deadAfter} ms`);
        return;
      }
      this.#write({ type: 'ping', seq: ++this.#seq });
    }, every);
    this.#heartbeat.unref();
  }

  #onData(chunk: Buffer): void {
    this.#lastHeard = Date.now();
    for (const item of this.#decoder.push(chunk)) {
      if (item instanceof ProtocolError) {
        debug('proxy %s: %s', this.name, item.message);
        continue;
      }
      let message: ProxyMessage;
      try {
        message = parseProxyMessage(item);
      } catch (error) {
        debug('proxy %s sent a bad message: %s', this.name, (error as Error).message);
        const id = (error as ProtocolError).id;
        if (id) this.#fail(id, new StillpointError(`proxy sent a malformed message for this task: ${(error as Error).message}`, { where: `proxy "${this.name}"` }));
        continue;
      }
      this.#handle(message);
    }
  }

  #handle(message: ProxyMessage): void {
    switch (message.type) {
      case 'welcome':
        this.#welcomeWaiter?.resolve(message);
        this.#welcomeWaiter = undefined;
        return;
      case 'pong':
      case 'accepted':
        return;
      case 'progress':
        this.#pending.get(message.id)?.options.onProgress?.({ diskId: message.diskId, bytesRead: message.bytesRead, bytesStored: message.bytesStored, totalBytes: message.totalBytes });
        return;
      case 'disk': {
        const pending = this.#pending.get(message.id);
        if (!pending) return;
        const stored: DiskStored = { diskId: message.diskId, record: message.record, bytesRead: message.bytesRead, bytesStored: message.bytesStored, durationMs: message.durationMs };
        pending.disks.push(stored);
        pending.options.onDisk?.(stored);
        return;
      }
      case 'done': {
        const pending = this.#pending.get(message.id);
        if (!pending) return;
        this.#pending.delete(message.id);
        pending.resolve(pending.disks);
        return;
      }
      case 'failed':
        this.#fail(message.id, taskError(this.welcome?.proxy ?? this.name, message.error, message.retryable));
        return;
      case 'error': {
        const error = new StillpointError(`the proxy refused a message: ${message.error.message}`, { where: `proxy "${this.name}"`, hint: message.error.hint });
        if (message.id) this.#fail(message.id, error);
        else if (this.#welcomeWaiter) {
          this.#welcomeWaiter.reject(error);
          this.#welcomeWaiter = undefined;
        } else debug('proxy %s: %s', this.name, message.error.message);
        return;
      }
    }
  }

  #fail(id: string, error: Error): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    pending.reject(error);
  }

  /** The stream ended: for a started proxy, wait a moment for its exit status, which says more. */
  #ended(reason: string): void {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return this.#lose(reason);
    setTimeout(() => this.#lose(reason), 2000).unref();
  }

  #lose(reason: string): void {
    if (this.#lost) return;
    const tail = this.#stderrTail.trim().split('\n').slice(-3).join(' | ');
    this.#lost = new ProxyLostError(`${this.#closing ? 'closed' : 'lost'} the proxy: ${reason}${tail ? ` (its last words: ${tail})` : ''}`, {
      where: `proxy "${this.name}"`,
      hint: 'the task may be retried on another proxy; check the proxy host and its log (DEBUG=stillpoint:*)',
    });
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    debug('%s', this.#lost.message);
    this.#welcomeWaiter?.reject(this.#lost);
    this.#welcomeWaiter = undefined;
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      pending.reject(this.#lost);
    }
    if (this.#child && this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.once('exit', () => this.#resolveClosed());
      // After bye the proxy exits by itself (close() kills it when it takes too long).
      if (!this.#closing) this.#child.kill('SIGKILL');
      this.#in.destroy();
    } else {
      this.#resolveClosed();
    }
  }
}
