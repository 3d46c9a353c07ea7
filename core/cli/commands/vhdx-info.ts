import { parseArgs } from 'node:util';
import { EXIT, type CliCommand, type CliIo } from '../command.ts';
import { VhdxDisk, type VhdxInfo, type VhdxLayerInfo } from '../../../plugins/vhdx/index.ts';

const usage = `Usage: stillpoint vhdx info FILE [--parent PATH]... [--force] [--json]
  Shows a VHDX/AVHDX file and its chain: headers, regions, metadata, parent locator, the BAT by
  block state, the log, and each link's check (the parent's DataWriteGuid against parent_linkage).
  --parent PATH   the chain below FILE, top first (instead of the parent locators)
  --force         accept a parent whose DataWriteGuid does not match
  --json          print the information as JSON`;

const MiB = 1024 * 1024;
const size = (n: number) => n >= 1024 * MiB ? `${(n / 1024 / MiB).toFixed(2)} GiB` : n >= MiB ? `${(n / MiB).toFixed(2)} MiB` : `${n} B`;

function layerText(l: VhdxLayerInfo, i: number): string {
  const out: string[] = [];
  out.push(`[${i}] ${l.path}`);
  out.push(`    type ${l.type}, file ${size(l.fileSize)}, virtual ${size(l.metadata.virtualSize)} (${l.metadata.virtualSize} bytes)`);
  out.push(`    block ${size(l.metadata.blockSize)}, logical sector ${l.metadata.logicalSectorSize}, physical sector ${l.metadata.physicalSectorSize}, disk id ${l.metadata.virtualDiskId}`);
  for (const h of l.headers) {
    out.push(h.valid
      ? `    header ${h.slot}${h.current ? ' (current)' : ''}: sequence ${h.sequenceNumber}, DataWriteGuid ${h.dataWriteGuid}, FileWriteGuid ${h.fileWriteGuid}, LogGuid ${h.logGuid}, log ${h.logLength} bytes at ${h.logOffset}`
      : `    header ${h.slot}: INVALID (${h.error})`);
  }
  out.push(`    regions (table ${l.regionTableUsed}): ${l.regions.map((r) => `${r.name} at ${r.offset} (${size(r.length)}${r.required ? ', required' : ''})`).join('; ')}`);
  for (const e of l.regionTableErrors) out.push(`    ! ${e}`);
  out.push(`    BAT: ${l.bat.entries} entries, chunk ratio ${l.bat.chunkRatio}, ${l.bat.payloadBlocks} payload blocks: ${Object.entries(l.bat.payloadStates).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (l.metadata.hasParent) out.push(`    sector bitmap blocks: ${Object.entries(l.bat.sectorBitmapStates).map(([k, v]) => `${k} ${v}`).join(', ') || 'none present'}`);
  if (l.log.replayed) out.push(`    log: ${l.log.entriesReplayed} entries replayed (${l.log.inMemory ? 'in memory, file unchanged' : 'into the file'}); ${l.log.otherGuidEntries} entries with another GUID ignored`);
  else out.push(`    log: clean${l.log.staleEntries ? ` (${l.log.staleEntries} stale entries ignored)` : ''}`);
  if (l.parentLocator) {
    out.push(`    parent locator (${l.parentLocator.type}):`);
    for (const [k, v] of Object.entries(l.parentLocator.entries)) out.push(`      ${k} = ${v}`);
  }
  return out.join('\n');
}

export function vhdxInfoText(info: VhdxInfo, chainError?: string): string {
  const out = info.layers.map(layerText);
  out.push('chain:');
  if (info.links.length === 0 && !chainError) out.push('  single disk (no parent)');
  for (const k of info.links) {
    out.push(`  ${k.child}\n    -> ${k.parent} (found by ${k.foundBy}): ${k.ok ? 'OK' : k.forced ? 'MISMATCH (forced)' : 'MISMATCH'}, parent DataWriteGuid ${k.parentDataWriteGuid}, parent_linkage ${k.parentLinkage ?? 'missing'}${k.parentLinkage2 ? `, parent_linkage2 ${k.parentLinkage2}` : ''}`);
  }
  if (chainError) out.push(`  BROKEN: ${chainError}`);
  return out.join('\n') + '\n';
}

export const vhdxInfoCommand: CliCommand = {
  name: 'vhdx info',
  summary: 'show a VHDX/AVHDX file and its chain',
  usage,
  async run(argv: string[], io: CliIo): Promise<number> {
    let args;
    try {
      args = parseArgs({ args: argv, allowPositionals: true, options: { parent: { type: 'string', multiple: true }, force: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
    } catch (e) {
      io.stderr.write(`${(e as Error).message}\n${usage}\n`);
      return EXIT.usage;
    }
    if (args.values.help) { io.stdout.write(`${usage}\n`); return EXIT.ok; }
    if (args.positionals.length !== 1) { io.stderr.write(`${usage}\n`); return EXIT.usage; }
    const { resolve } = await import('node:path');
    const file = resolve(io.cwd, args.positionals[0]);
    const parentPaths = (args.values.parent ?? []).map((p) => resolve(io.cwd, p));
    let chainError: string | undefined;
    let disk: VhdxDisk;
    try {
      disk = await VhdxDisk.open(file, { parentPaths, force: args.values.force });
    } catch (e) {
      chainError = (e as Error).message;
      try {
        disk = await VhdxDisk.open(file, { alone: true });
      } catch (e2) {
        io.stderr.write(`stillpoint vhdx info: ${(e2 as Error).message}\n`);
        return EXIT.failure;
      }
    }
    try {
      const info = await disk.info();
      if (args.values.json) io.stdout.write(`${JSON.stringify(chainError ? { ...info, chainError } : info, null, 2)}\n`);
      else io.stdout.write(vhdxInfoText(info, chainError));
    } finally {
      await disk.close();
    }
    return chainError ? EXIT.failure : EXIT.ok;
  },
};
