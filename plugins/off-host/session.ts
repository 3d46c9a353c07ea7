import { hostname } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { timingSafeEqual } from 'node:crypto';
import createDebug from 'debug';
import {
  PROTOCOL_VERSION, LineDecoder, ProtocolError, encodeMessage, errorToInfo, parseCoordinatorMessage,
  type DiskTask, type ProxyMessage, type TaskMessage,
} from './protocol.ts';

const debug = createDebug('stillpoint:proxy');

/** What a task runner reports while it works. */
export interface TaskReporter {
  progress(disk: DiskTask, progress: { bytesRead: number; bytesStored: number; totalBytes: number }): void;
  /** One disk stored: its repository record and counts. */
  disk(disk: DiskTask, result: { record: unknown; bytesRead: number; bytesStored: number; durationMs: number }): void;
}

/** Runs one task: read every disk of `task` and store it; reject to fail the task. */
export type TaskRunner = (task: TaskMessage, report: TaskReporter, signal: AbortSignal) => Promise<void>;

/** Says whether a failure may succeed on another proxy (defaults to: it is a TransientError). */
export type RetryablePredicate = (error: unknown) => boolean;

export interface ProxySessionOptions {
  name: string;
  concurrency: number;
  runner: TaskRunner;
  /** Required token in the coordinator's hello (from `--token-file`). */
  token?: string;
  retryable?: RetryablePredicate;
  maxLineBytes?: number;
  /** Minimum interval between two progress messages of one disk. */
  progressIntervalMs?: number;
}

class Cancelled extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'Cancelled';
  }
}

interface Running {
  task: TaskMessage;
  controller: AbortController;
}

/**
 * The proxy's side of one connection: checks the hello, runs tasks (at most `concurrency` at once,
 * the rest queued in arrival order), reports, and aborts every task of the session when the
 * coordinator goes away (so a vanished coordinator does not leave the proxy writing).
 */
export class ProxySession {
  readonly #in: Readable;
  readonly #out: Writable;
  readonly #options: ProxySessionOptions;
  readonly #decoder: LineDecoder;
  #greeted = false;
  #closed = false;
  readonly #tasks = new Map<string, Running>();
  readonly #queue: string[] = [];
  #active = 0;
  readonly #finished: Promise<void>;
  #resolveFinished!: () => void;

  constructor(input: Readable, output: Writable, options: ProxySessionOptions) {
    this.#in = input;
    this.#out = output;
    this.#options = options;
    this.#decoder = new LineDecoder(options.maxLineBytes);
    this.#finished = new Promise((resolve) => { this.#resolveFinished = resolve; });
    input.on('data', (chunk: Buffer) => this.#onData(chunk));
    input.on('end', () => this.#shutdown('the coordinator closed the connection'));
    input.on('close', () => this.#shutdown('the coordinator closed the connection'));
    input.on('error', (error) => this.#shutdown(`connection error: ${error.message}`));
    output.on('error', (error) => this.#shutdown(`connection error: ${error.message}`));
  }

  /** Resolves once the connection has ended and every task of the session has settled. */
  get finished(): Promise<void> {
    return this.#finished;
  }

  #send(message: ProxyMessage): void {
    if (this.#closed && message.type !== 'failed' && message.type !== 'done') return;
    if ((this.#out as Writable & { destroyed?: boolean }).destroyed || this.#out.writableEnded) return;
    this.#out.write(encodeMessage(message));
  }

  #onData(chunk: Buffer): void {
    for (const item of this.#decoder.push(chunk)) {
      if (item instanceof ProtocolError) {
        this.#send({ type: 'error', error: errorToInfo(item) });
        continue;
      }
      try {
        this.#handle(item);
      } catch (error) {
        const id = error instanceof ProtocolError ? error.id : undefined;
        debug('bad message: %s', (error as Error).message);
        this.#send({ type: 'error', ...(id ? { id } : {}), error: errorToInfo(error) });
      }
    }
  }

  #handle(line: string): void {
    const message = parseCoordinatorMessage(line);
    if (!this.#greeted && message.type !== 'hello') {
      throw new ProtocolError(`expected "hello" first, got "${message.type}"`, 'id' in message ? message.id : undefined);
    }
    switch (message.type) {
      case 'hello': {
        if (this.#greeted) throw new ProtocolError('"hello" was already received');
        if (message.protocol !== PROTOCOL_VERSION) {
          this.#send({ type: 'error', error: { name: 'ProtocolError', message: `protocol version ${message.protocol} is not supported; this proxy speaks ${PROTOCOL_VERSION}`, hint: 'run the same Stillpoint version on the host and the proxy' } });
          this.#end();
          return;
        }
        if (this.#options.token !== undefined && !sameSecret(this.#options.token, message.token ?? '')) {
          debug('refused %s: wrong token', message.client);
          this.#send({ type: 'error', error: { name: 'ProtocolError', message: 'the token in "hello" is missing or wrong', hint: "set the proxy's token in the coordinator's config (proxies[].tokenFile)" } });
          this.#end();
          return;
        }
        this.#greeted = true;
        debug('session with %s', message.client);
        this.#send({ type: 'welcome', protocol: PROTOCOL_VERSION, proxy: this.#options.name, hostname: hostname(), pid: process.pid, concurrency: this.#options.concurrency });
        return;
      }
      case 'ping':
        this.#send({ type: 'pong', seq: message.seq });
        return;
      case 'bye':
        this.#end();
        return;
      case 'cancel': {
        const running = this.#tasks.get(message.id);
        if (!running) throw new ProtocolError(`no task "${message.id}" to cancel`, message.id);
        running.controller.abort(new Cancelled(message.reason ?? 'cancelled by the coordinator'));
        const queued = this.#queue.indexOf(message.id);
        if (queued !== -1) {
          this.#queue.splice(queued, 1);
          this.#settle(message.id, running.controller.signal.reason);
        }
        return;
      }
      case 'task': {
        if (this.#tasks.has(message.id)) throw new ProtocolError(`task "${message.id}" is already running`, message.id);
        this.#tasks.set(message.id, { task: message, controller: new AbortController() });
        const queued = this.#active >= this.#options.concurrency;
        this.#queue.push(message.id);
        this.#send({ type: 'accepted', id: message.id, queued });
        this.#pump();
        return;
      }
    }
  }

  #pump(): void {
    while (this.#active < this.#options.concurrency && this.#queue.length > 0) {
      const id = this.#queue.shift()!;
      const running = this.#tasks.get(id)!;
      this.#active++;
      void this.#run(running).finally(() => {
        this.#active--;
        this.#pump();
      });
    }
    this.#maybeFinished();
  }

  async #run({ task, controller }: Running): Promise<void> {
    const interval = this.#options.progressIntervalMs ?? 250;
    const lastSent = new Map<string, number>();
    const reporter: TaskReporter = {
      progress: (disk, p) => {
        const now = Date.now();
        if (now - (lastSent.get(disk.diskId) ?? 0) < interval) return;
        lastSent.set(disk.diskId, now);
        this.#send({ type: 'progress', id: task.id, diskId: disk.diskId, ...p });
      },
      disk: (disk, r) => {
        this.#send({ type: 'disk', id: task.id, diskId: disk.diskId, record: r.record, bytesRead: r.bytesRead, bytesStored: r.bytesStored, durationMs: r.durationMs });
      },
    };
    debug('task %s: VM %s, %d disk(s)', task.id, task.vm.name, task.disks.length);
    try {
      if (controller.signal.aborted) throw controller.signal.reason;
      await this.#options.runner(task, reporter, controller.signal);
      if (controller.signal.aborted) throw controller.signal.reason;
      this.#settle(task.id);
    } catch (error) {
      this.#settle(task.id, error);
    }
  }

  #settle(id: string, error?: unknown): void {
    if (!this.#tasks.delete(id)) return;
    if (error === undefined) {
      debug('task %s done', id);
      this.#send({ type: 'done', id });
    } else {
      debug('task %s failed: %s', id, (error as Error)?.message ?? error);
      const retryable = error instanceof Cancelled ? false : (this.#options.retryable ?? defaultRetryable)(error);
      this.#send({ type: 'failed', id, error: errorToInfo(error), retryable });
    }
    this.#maybeFinished();
  }

  #maybeFinished(): void {
    if (this.#closed && this.#tasks.size === 0) this.#resolveFinished();
  }

  #end(): void {
    this.#shutdown('the coordinator said bye');
    this.#out.end();
  }

  #shutdown(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#tasks.size) debug('aborting %d task(s): %s', this.#tasks.size, reason);
    for (const id of [...this.#queue]) this.#settle(id, new Cancelled(reason));
    this.#queue.length = 0;
    for (const { controller } of this.#tasks.values()) controller.abort(new Cancelled(reason));
    this.#maybeFinished();
  }
}

function defaultRetryable(error: unknown): boolean {
  return error instanceof Error && error.name === 'TransientError';
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
