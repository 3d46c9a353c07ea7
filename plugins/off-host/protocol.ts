import { z } from 'zod';

/**
 * The proxy protocol (docs/proxy-protocol.md): newline-delimited JSON, one message per line, over
 * the proxy's stdin/stdout or a unix/TCP socket. The coordinator speaks first (`hello`); the proxy
 * answers `welcome`, then runs `task`s and reports `progress`, one `disk` per stored disk, and
 * `done` or `failed` per task.
 */
export const PROTOCOL_VERSION = 1;

/** Longest line either side accepts (a disk record of a large disk is the biggest message). */
export const DEFAULT_MAX_LINE_BYTES = 256 * 1024 * 1024;

const id = z.string().min(1).max(200);

export const byteRangeSchema = z.object({ offset: z.number().int().nonnegative(), length: z.number().int().positive() });

/** One disk to read: its chain as the proxy sees it (in the presented volume snapshot). */
export const diskTaskSchema = z.object({
  diskId: z.string().min(1),
  /** Top of the chain to open, as a path on the proxy. */
  path: z.string().min(1),
  /** The rest of the chain below `path`, top first (overrides the parent locators). */
  parentPaths: z.array(z.string().min(1)).default([]),
  virtualSize: z.number().int().nonnegative(),
  /** Changed ranges since the reference point; absent or null: read every allocated extent. */
  changed: z.array(byteRangeSchema).nullable().optional(),
  /** Why every allocated extent is read (when `changed` is absent or null), kept in the disk's record. */
  fullReadReason: z.string().optional(),
});

/** Where the proxy stores: the repository config (storage target spec included) and its secret. */
export const repositoryTargetSchema = z.object({
  /** The `repository` section of the config, as the coordinator uses it. */
  config: z.record(z.string(), z.unknown()),
  /**
   * The repository passphrase, sent only over a channel that is private to the two ends (stdio of
   * a process the coordinator started, possibly through ssh, or a unix socket). Over TCP the proxy
   * takes the passphrase from its own environment instead (`--passphrase-env`).
   */
  passphrase: z.string().optional(),
});

export const helloSchema = z.object({
  type: z.literal('hello'),
  protocol: z.number().int(),
  /** Who is asking (host name and pid), for the proxy's log. */
  client: z.string(),
  /** Shared secret, required when the proxy was started with `--token-file`. */
  token: z.string().optional(),
});

export const taskSchema = z.object({
  type: z.literal('task'),
  id,
  vm: z.object({ id: z.string(), name: z.string() }),
  /** Opaque to the protocol: the restore point the disks go into, as the repository's data store needs it. */
  restorePoint: z.record(z.string(), z.unknown()).default({}),
  repository: repositoryTargetSchema,
  disks: z.array(diskTaskSchema).min(1),
});

export const cancelSchema = z.object({ type: z.literal('cancel'), id, reason: z.string().optional() });
export const pingSchema = z.object({ type: z.literal('ping'), seq: z.number().int() });
export const byeSchema = z.object({ type: z.literal('bye') });

export const coordinatorMessageSchema = z.discriminatedUnion('type', [helloSchema, taskSchema, cancelSchema, pingSchema, byeSchema]);

export const errorInfoSchema = z.object({
  /** Error class: StillpointError, NotFoundError, TransientError, CorruptImageError, ConfigError, Error, Cancelled. */
  name: z.string(),
  message: z.string(),
  where: z.string().optional(),
  hint: z.string().optional(),
});

export const welcomeSchema = z.object({
  type: z.literal('welcome'),
  protocol: z.number().int(),
  /** The proxy's name (`--name`, default the host name). */
  proxy: z.string(),
  hostname: z.string(),
  pid: z.number().int(),
  /** Tasks the proxy runs at once; more are queued. */
  concurrency: z.number().int().positive(),
});

export const acceptedSchema = z.object({ type: z.literal('accepted'), id, queued: z.boolean() });

export const progressSchema = z.object({
  type: z.literal('progress'),
  id,
  diskId: z.string(),
  bytesRead: z.number().nonnegative(),
  bytesStored: z.number().nonnegative(),
  totalBytes: z.number().nonnegative(),
});

export const diskDoneSchema = z.object({
  type: z.literal('disk'),
  id,
  diskId: z.string(),
  /** The repository's record of the stored disk (its DiskRecord), handed to the restore-point writer. */
  record: z.unknown(),
  bytesRead: z.number().nonnegative(),
  bytesStored: z.number().nonnegative(),
  durationMs: z.number().nonnegative(),
});

export const doneSchema = z.object({ type: z.literal('done'), id });
export const failedSchema = z.object({
  type: z.literal('failed'),
  id,
  error: errorInfoSchema,
  /** True when another proxy might succeed (a transient fault on this proxy). */
  retryable: z.boolean(),
});
export const pongSchema = z.object({ type: z.literal('pong'), seq: z.number().int() });
/** A message the proxy could not take (bad JSON, wrong shape, unknown task); with the task id when known. */
export const protocolErrorSchema = z.object({ type: z.literal('error'), id: z.string().optional(), error: errorInfoSchema });

export const proxyMessageSchema = z.discriminatedUnion('type', [
  welcomeSchema, acceptedSchema, progressSchema, diskDoneSchema, doneSchema, failedSchema, pongSchema, protocolErrorSchema,
]);

export type DiskTask = z.output<typeof diskTaskSchema>;
export type TaskMessage = z.output<typeof taskSchema>;
export type CoordinatorMessage = z.output<typeof coordinatorMessageSchema>;
export type ProxyMessage = z.output<typeof proxyMessageSchema>;
export type ErrorInfo = z.output<typeof errorInfoSchema>;
export type WelcomeMessage = z.output<typeof welcomeSchema>;

/** One message as one line of JSON. */
export function encodeMessage(message: CoordinatorMessage | ProxyMessage): string {
  return JSON.stringify(message) + '\n';
}

/** A line that is not a valid message: what was wrong, for an `error` reply or the log. */
export class ProtocolError extends Error {
  readonly id?: string;
  constructor(message: string, id?: string) {
    super(message);
    this.name = 'ProtocolError';
    this.id = id;
  }
}

function describe(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(message)'}: ${i.message}`).join('; ');
}

function parseWith<S extends z.ZodType>(schema: S, line: string, side: string): z.output<S> {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    throw new ProtocolError(`${side} message is not JSON: ${(error as Error).message}`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const maybeId = typeof (value as { id?: unknown })?.id === 'string' ? (value as { id: string }).id : undefined;
    const type = typeof (value as { type?: unknown })?.type === 'string' ? `"${(value as { type: string }).type}" ` : '';
    throw new ProtocolError(`${side} message ${type}is malformed: ${describe(parsed.error)}`, maybeId);
  }
  return parsed.data;
}

export function parseCoordinatorMessage(line: string): CoordinatorMessage {
  return parseWith(coordinatorMessageSchema, line, 'coordinator');
}

export function parseProxyMessage(line: string): ProxyMessage {
  return parseWith(proxyMessageSchema, line, 'proxy');
}

/**
 * Splits a byte stream into lines. Chunks are kept in a list until a newline arrives, so a long
 * line costs one concatenation; a line longer than `maxLineBytes` is an error (and is dropped).
 */
export class LineDecoder {
  #parts: Buffer[] = [];
  #size = 0;
  #overflow = false;
  readonly maxLineBytes: number;

  constructor(maxLineBytes = DEFAULT_MAX_LINE_BYTES) {
    this.maxLineBytes = maxLineBytes;
  }

  /** Feeds bytes; returns the complete lines (without `\n`), and an error for each overlong line. */
  push(chunk: Buffer): Array<string | ProtocolError> {
    const out: Array<string | ProtocolError> = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl === -1 ? chunk.length : nl;
      const piece = chunk.subarray(start, end);
      if (!this.#overflow) {
        if (this.#size + piece.length > this.maxLineBytes) {
          this.#overflow = true;
          this.#parts = [];
        } else if (piece.length) {
          this.#parts.push(piece);
        }
        this.#size += piece.length;
      }
      if (nl === -1) break;
      if (this.#overflow) {
        out.push(new ProtocolError(`a message line is longer than ${this.maxLineBytes} bytes; it was dropped`));
      } else {
        const line = (this.#parts.length === 1 ? this.#parts[0] : Buffer.concat(this.#parts)).toString('utf8').replace(/\r$/, '');
        if (line.trim()) out.push(line);
      }
      this.#parts = [];
      this.#size = 0;
      this.#overflow = false;
      start = nl + 1;
    }
    return out;
  }

  /** Bytes of an unfinished line (non-zero at end of stream means the last message was cut off). */
  get pending(): number {
    return this.#size;
  }
}

/** An error as it travels: its class name, message and, for Stillpoint errors, where and what to do. */
export function errorToInfo(error: unknown): ErrorInfo {
  if (error instanceof Error) {
    const e = error as Error & { where?: unknown; hint?: unknown };
    return {
      name: e.name,
      message: e.message,
      ...(typeof e.where === 'string' ? { where: e.where } : {}),
      ...(typeof e.hint === 'string' ? { hint: e.hint } : {}),
    };
  }
  return { name: 'Error', message: String(error) };
}
