import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../../errors.ts';
import { Session } from '../../session.ts';
import { EXIT, type CliIo } from '../command.ts';

export const configOption = { config: { type: 'string', short: 'c' } } as const;

/** parseArgs that turns a usage mistake into a message and exit status 2. */
export function parse<T extends ParseArgsConfig['options']>(argv: string[], options: T, usage: string, io: CliIo, allowPositionals = true) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals, strict: true });
  } catch (e) {
    io.stderr.write(`stillpoint: ${(e as Error).message}\n${usage}\n`);
    return undefined;
  }
}

/** Report an error the way every command does; config problems are usage errors (2). */
export function reportError(e: unknown, io: CliIo): number {
  if (e instanceof ConfigError) {
    io.stderr.write(`stillpoint: config error: ${e.message}\n`);
    return EXIT.usage;
  }
  io.stderr.write(`stillpoint: ${(e as Error).message ?? String(e)}\n`);
  if (io.env.DEBUG && e instanceof Error && e.stack) io.stderr.write(`${e.stack}\n`);
  return EXIT.failure;
}

/** Open the session of the config (--config or cosmiconfig search), run `fn`, always close. */
export async function withSession(io: CliIo, configPath: string | undefined, fn: (s: Session) => Promise<number>): Promise<number> {
  let session: Session | undefined;
  try {
    session = await Session.open({ cwd: io.cwd, configPath, env: io.env });
    return await fn(session);
  } catch (e) {
    return reportError(e, io);
  } finally {
    await session?.close().catch((e: unknown) => io.stderr.write(`stillpoint: while closing: ${(e as Error).message}\n`));
  }
}
