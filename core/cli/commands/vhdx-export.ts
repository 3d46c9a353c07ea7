import { open } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { EXIT, type CliCommand, type CliIo } from '../command.ts';
import { VhdxDisk } from '../../../plugins/vhdx/index.ts';

const usage = `Usage: stillpoint vhdx export FILE -o OUT|- [--parent PATH]... [--force]
  Writes the virtual disk of FILE's chain as raw data to OUT (a sparse file: only the extents that
  hold data are written) or to standard output with "-o -".
  --parent PATH   the chain below FILE, top first (instead of the parent locators)
  --force         accept a parent whose DataWriteGuid does not match`;

const CHUNK = 8 * 1024 * 1024;

function writeStdout(io: CliIo, b: Buffer): Promise<void> {
  return new Promise((res, rej) => {
    io.stdout.write(b, (err) => (err ? rej(err) : res()));
  });
}

export const vhdxExportCommand: CliCommand = {
  name: 'vhdx export',
  summary: 'write a VHDX chain as raw data',
  usage,
  async run(argv: string[], io: CliIo): Promise<number> {
    let args;
    try {
      args = parseArgs({ args: argv, allowPositionals: true, options: { output: { type: 'string', short: 'o' }, parent: { type: 'string', multiple: true }, force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
    } catch (e) {
      io.stderr.write(`${(e as Error).message}\n${usage}\n`);
      return EXIT.usage;
    }
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    if (args.positionals.length !== 1 || !args.values.output) { io.stderr.write(`${usage}\n`); return EXIT.usage; }
    const file = resolve(io.cwd, args.positionals[0]);
    let disk: VhdxDisk;
    try {
      disk = await VhdxDisk.open(file, { parentPaths: (args.values.parent ?? []).map((p) => resolve(io.cwd, p)), force: args.values.force });
    } catch (e) {
      io.stderr.write(`stillpoint vhdx export: ${(e as Error).message}\n`);
      return EXIT.failure;
    }
    try {
      const extents = await disk.allocation();
      const bufs = [Buffer.alloc(CHUNK), Buffer.alloc(CHUNK)];
      if (args.values.output === '-') {
        const zeros = Buffer.alloc(CHUNK);
        let k = 0;
        for (const e of extents) {
          for (let at = e.offset; at < e.offset + e.length; at += CHUNK) {
            const n = Math.min(CHUNK, e.offset + e.length - at);
            if (e.kind === 'zero') { await writeStdout(io, zeros.subarray(0, n)); continue; }
            const b = bufs[k++ % 2];
            await disk.read(at, b, n);
            await writeStdout(io, b.subarray(0, n));
          }
        }
      } else {
        const out = resolve(io.cwd, args.values.output);
        const fh = await open(out, 'w');
        try {
          await fh.truncate(disk.virtualSize);
          for (const e of extents) {
            if (e.kind === 'zero') continue;
            for (let at = e.offset; at < e.offset + e.length; at += CHUNK) {
              const n = Math.min(CHUNK, e.offset + e.length - at);
              await disk.read(at, bufs[0], n);
              await fh.write(bufs[0], 0, n, at);
            }
          }
          await fh.sync();
        } finally {
          await fh.close();
        }
        const data = extents.filter((e) => e.kind === 'data').reduce((a, e) => a + e.length, 0);
        io.stderr.write(`exported ${disk.chain.length} layer(s), ${disk.virtualSize} bytes (${data} bytes of data) to ${out}\n`);
      }
    } catch (e) {
      io.stderr.write(`stillpoint vhdx export: ${(e as Error).message}\n`);
      return EXIT.failure;
    } finally {
      await disk.close();
    }
    return EXIT.ok;
  },
};
