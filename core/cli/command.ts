import type { Writable } from 'node:stream';

/** Where a command writes: the CLI's own output (progress, tables, summaries), not `debug`. */
export interface CliIo {
  stdout: Writable & { isTTY?: boolean; columns?: number };
  stderr: Writable;
  /** Working directory the user ran the command in. */
  cwd: string;
  env: NodeJS.ProcessEnv;
}

/**
 * One `stillpoint <name>` command. Each lives in its own module under core/cli/commands/
 * and is listed in core/cli/commands/index.ts. Parse `argv` with node:util `parseArgs`.
 * Resolve with the process exit status (0 success, 1 failure, 2 usage error, 3 partial success).
 */
export interface CliCommand {
  /** e.g. "backup", or "vhdx info" for a subcommand. */
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  run(argv: string[], io: CliIo): Promise<number>;
}

export const EXIT = { ok: 0, failure: 1, usage: 2, partial: 3 } as const;
