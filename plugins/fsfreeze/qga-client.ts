/**
 * A client for the QEMU guest agent's protocol (QMP-like JSON, one object per line) on a unix
 * socket: the host side of a KVM guest's virtio-serial channel, or `qemu-ga -m unix-listen`.
 *
 * The agent serves one client at a time, so connections are short: open, sync, a few requests,
 * close. Each connection starts with `guest-sync-delimited` after a 0xFF byte, which makes the
 * agent drop any half-read input and lets us skip stale output up to its 0xFF marker.
 */
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { StillpointError, TransientError } from '../../core/errors.ts';

export class GuestAgentError extends StillpointError {
  /** The agent's error class, e.g. "GenericError", "CommandNotFound". */
  readonly errorClass?: string;
  constructor(message: string, options: { where?: string; hint?: string; cause?: unknown; errorClass?: string } = {}) {
    super(message, options);
    this.errorClass = options.errorClass;
  }
}

type Reply = { return: unknown } | { error: { class?: string; desc?: string } };

export class QgaConnection {
  private buffer = Buffer.alloc(0);
  private synced = false;
  private waiter: { resolve: (line: string) => void; reject: (error: Error) => void } | undefined;
  private failure: Error | undefined;

  private constructor(
    private readonly socket: net.Socket,
    private readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.pump();
    });
    const fail = (error: Error) => {
      this.failure ??= error;
      this.waiter?.reject(this.failure);
      this.waiter = undefined;
    };
    socket.on('error', (error) => fail(new TransientError(`guest agent socket error: ${error.message}`, { where: socketPath, cause: error })));
    socket.on('close', () => fail(new TransientError('the guest agent closed the connection', { where: socketPath })));
  }

  /** Connect and synchronise; fails within `timeoutMs`. */
  static async open(socketPath: string, timeoutMs: number): Promise<QgaConnection> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(socketPath);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new TransientError(`could not connect to the guest agent within ${timeoutMs} ms`, { where: socketPath }));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          new TransientError(`cannot connect to the guest agent: ${error.message}`, {
            where: socketPath,
            cause: error,
            hint: error.code === 'ENOENT' ? 'Check the qga socket path and that the VM (or qemu-ga) is running' : undefined,
          }),
        );
      });
    });
    const connection = new QgaConnection(socket, socketPath, timeoutMs);
    try {
      await connection.sync();
    } catch (error) {
      connection.close();
      throw error;
    }
    return connection;
  }

  private pump(): void {
    if (!this.synced) {
      const marker = this.buffer.indexOf(0xff);
      if (marker < 0) return;
      this.buffer = this.buffer.subarray(marker + 1);
      this.synced = true;
    }
    const newline = this.buffer.indexOf(0x0a);
    if (newline < 0 || !this.waiter) return;
    const line = this.buffer.subarray(0, newline).toString('utf8');
    this.buffer = this.buffer.subarray(newline + 1);
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter.resolve(line);
  }

  private nextLine(timeoutMs: number, what: string): Promise<string> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new TransientError(`the guest agent did not answer ${what} within ${timeoutMs} ms`, { where: this.socketPath }));
      }, timeoutMs);
      this.waiter = {
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.pump();
    });
  }

  private async sync(): Promise<void> {
    const id = randomInt(1, 2 ** 31);
    this.socket.write(Buffer.from([0xff]));
    this.socket.write(`${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`);
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const line = await this.nextLine(Math.max(1, deadline - Date.now()), 'guest-sync-delimited');
      if (line.trim() === '') continue;
      let reply: unknown;
      try {
        reply = JSON.parse(line);
      } catch {
        continue; // stale partial output
      }
      if (reply && typeof reply === 'object' && 'return' in reply && (reply as { return: unknown }).return === id) return;
    }
  }

  /** Run one command and return its `return` value; a reply with `error` becomes a GuestAgentError. */
  async execute<T>(command: string, args?: Record<string, unknown>, timeoutMs = this.timeoutMs): Promise<T> {
    this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    for (;;) {
      const line = await this.nextLine(timeoutMs, command);
      if (line.trim() === '') continue;
      let reply: Reply;
      try {
        reply = JSON.parse(line) as Reply;
      } catch {
        throw new GuestAgentError(`the guest agent sent something that is not JSON in reply to ${command}: ${line.slice(0, 200)}`, {
          where: this.socketPath,
        });
      }
      if ('error' in reply) {
        throw new GuestAgentError(`${command} failed: ${reply.error.desc ?? 'unknown error'}`, {
          where: this.socketPath,
          errorClass: reply.error.class,
        });
      }
      return reply.return as T;
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Open, run `fn`, close. */
export async function withAgent<T>(socketPath: string, timeoutMs: number, fn: (agent: QgaConnection) => Promise<T>): Promise<T> {
  const agent = await QgaConnection.open(socketPath, timeoutMs);
  try {
    return await fn(agent);
  } finally {
    agent.close();
  }
}

/** Thaw every frozen filesystem of the guest (guest-fsfreeze-thaw is guest-wide). Returns how many were thawed. */
export function thawThroughAgent(socketPath: string, timeoutMs: number): Promise<number> {
  return withAgent(socketPath, timeoutMs, (agent) => agent.execute<number>('guest-fsfreeze-thaw', undefined, Math.max(timeoutMs, 30_000)));
}
