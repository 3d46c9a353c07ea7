/**
 * The VHDX plugin: the disk reader for *.vhdx / *.avhdx chains, on top of the native library
 * (plugins/vhdx/native). Also the API the lab and restores use to create, write and merge disks.
 */
import { z } from 'zod';
import type { DiskReader, OpenDisk } from '../../core/contracts/reader.ts';
import { definePlugin } from '../../core/plugin.ts';
import { VhdxDisk } from './disk.ts';

export {
  createDifferencing, createDynamic, createFixed, mergeIntoParent, VhdxDisk,
  type VhdxCreateOptions, type VhdxHeaderInfo, type VhdxInfo, type VhdxLayerInfo, type VhdxLinkInfo, type VhdxOpenOptions,
} from './disk.ts';
export { VhdxBusyError, VhdxLinkageError } from './native.ts';

export const optionsSchema = z.object({
  /** Accept a parent whose DataWriteGuid does not match the child's parent_linkage (not recommended). */
  force: z.boolean().default(false),
}).strict();

const VHDX_PATH = /\.a?vhdx$/i;

/** A DiskReader for VHDX chains. */
export function vhdxReader(options: { force?: boolean } = {}): DiskReader {
  return {
    name: 'vhdx',
    canOpen: (path: string) => VHDX_PATH.test(path),
    open: (path: string, o?: { parentPaths?: string[] }): Promise<OpenDisk> =>
      VhdxDisk.open(path, { parentPaths: o?.parentPaths, force: options.force }),
  };
}

export default definePlugin('vhdx', optionsSchema, (options) => {
  const reader = vhdxReader(options);
  return {
    name: 'vhdx',
    apply(engine) {
      engine.hooks.resolveReader.tap('vhdx', (path) => (reader.canOpen(path) ? reader : undefined));
    },
  };
});
