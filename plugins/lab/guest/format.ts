/**
 * The on-disk format of the lab's guest workload: a tiny database that updates pages in place and
 * keeps a ring of commit records, so that an image cut in the middle of a transaction shows it
 * (a torn transaction), and an image taken at a transaction boundary does not.
 *
 * Every page is `PAGE_SIZE` bytes and ends with a CRC-32 of the rest of the page.
 * - page 0: the superblock (magic, layout, VM id, disk id);
 * - pages 1 .. logPages: commit records, one per page, at `1 + seq % logPages`;
 * - pages dataStart .. dataStart + dataPages - 1: data pages, each naming its transaction and the
 *   other pages that transaction wrote (so one disk alone tells whether a transaction is whole).
 * A transaction writes its data pages first, then its commit record.
 */
import { crc32 } from 'node:zlib';

export const PAGE_SIZE = 4096;
export const MAX_TX_PAGES = 16;
const SUPER_MAGIC = 'SPLABWL1';
const COMMIT_MAGIC = 'SPLABCMT';
const DATA_MAGIC = 'SPLABDAT';
const CRC_AT = PAGE_SIZE - 4;

export interface Layout {
  logPages: number;
  dataPages: number;
  /** First data page. */
  dataStart: number;
  vmId: string;
  diskId: string;
}

export function layoutFor(virtualSize: number, vmId: string, diskId: string, options: { logPages?: number; dataPages?: number } = {}): Layout {
  const logPages = options.logPages ?? 64;
  const dataStart = 1 + logPages;
  const room = Math.floor(virtualSize / PAGE_SIZE) - dataStart;
  const dataPages = Math.min(options.dataPages ?? 2048, room);
  if (dataPages < MAX_TX_PAGES) throw new RangeError(`a disk of ${virtualSize} bytes is too small for the lab workload (needs ${(dataStart + MAX_TX_PAGES) * PAGE_SIZE} bytes)`);
  return { logPages, dataPages, dataStart, vmId, diskId };
}

function seal(page: Buffer): Buffer {
  page.writeUInt32LE(crc32(page.subarray(0, CRC_AT)), CRC_AT);
  return page;
}

export function pageIntact(page: Buffer): boolean {
  return page.readUInt32LE(CRC_AT) === crc32(page.subarray(0, CRC_AT));
}

export function isZero(page: Buffer): boolean {
  for (let i = 0; i < page.length; i += 8) if (page.readBigUInt64LE(i) !== 0n) return false;
  return true;
}

function writeText(page: Buffer, at: number, text: string, max: number): void {
  const b = Buffer.from(text, 'utf8');
  if (b.length > max) throw new RangeError(`"${text}" is longer than ${max} bytes`);
  b.copy(page, at);
}

function readText(page: Buffer, at: number, max: number): string {
  const end = page.indexOf(0, at);
  return page.subarray(at, end < 0 || end > at + max ? at + max : end).toString('utf8');
}

export function encodeSuperblock(layout: Layout): Buffer {
  const page = Buffer.alloc(PAGE_SIZE);
  page.write(SUPER_MAGIC, 0, 'latin1');
  page.writeUInt32LE(1, 8);
  page.writeUInt32LE(PAGE_SIZE, 12);
  page.writeUInt32LE(layout.logPages, 16);
  page.writeUInt32LE(layout.dataPages, 20);
  page.writeUInt32LE(layout.dataStart, 24);
  writeText(page, 32, layout.vmId, 96);
  writeText(page, 128, layout.diskId, 96);
  return seal(page);
}

/** The layout of a formatted disk, or why the page is not a superblock. */
export function decodeSuperblock(page: Buffer): Layout | string {
  if (isZero(page)) return 'the first page is empty: the disk was never formatted by the lab workload (or the restore wrote nothing)';
  if (page.toString('latin1', 0, 8) !== SUPER_MAGIC) return 'the first page is not a lab workload superblock';
  if (!pageIntact(page)) return 'the superblock is damaged (checksum mismatch)';
  return {
    logPages: page.readUInt32LE(16),
    dataPages: page.readUInt32LE(20),
    dataStart: page.readUInt32LE(24),
    vmId: readText(page, 32, 96),
    diskId: readText(page, 128, 96),
  };
}

/** Deterministic payload of a data page, from the transaction and the page index. */
function fillPayload(page: Buffer, from: number, to: number, seq: number, index: number): void {
  let x = (Math.imul(seq, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0 || 1;
  for (let i = from; i + 4 <= to; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    page.writeUInt32LE(x, i);
  }
}

const DATA_PAYLOAD_AT = 32 + 4 * MAX_TX_PAGES;

export function encodeDataPage(seq: number, index: number, txPages: number[]): Buffer {
  const page = Buffer.alloc(PAGE_SIZE);
  page.write(DATA_MAGIC, 0, 'latin1');
  page.writeBigUInt64LE(BigInt(seq), 8);
  page.writeUInt32LE(index, 16);
  page.writeUInt32LE(txPages.length, 20);
  txPages.forEach((p, i) => page.writeUInt32LE(p, 32 + 4 * i));
  fillPayload(page, DATA_PAYLOAD_AT, CRC_AT, seq, index);
  return seal(page);
}

export interface DataPage { seq: number; index: number; txPages: number[]; crc: number }

/** A data page, `null` when never written, or a string saying what is wrong with it. */
export function decodeDataPage(page: Buffer, index: number): DataPage | null | string {
  if (isZero(page)) return null;
  if (page.toString('latin1', 0, 8) !== DATA_MAGIC) return `data page ${index} holds something else than a workload page`;
  if (!pageIntact(page)) return `data page ${index} is torn inside (checksum mismatch)`;
  const seq = Number(page.readBigUInt64LE(8));
  const own = page.readUInt32LE(16);
  if (own !== index) return `data page ${index} claims to be page ${own} (misplaced write)`;
  const count = page.readUInt32LE(20);
  if (count < 1 || count > MAX_TX_PAGES) return `data page ${index} names ${count} pages in its transaction`;
  const txPages = Array.from({ length: count }, (_, i) => page.readUInt32LE(32 + 4 * i));
  const expected = Buffer.alloc(PAGE_SIZE);
  fillPayload(expected, DATA_PAYLOAD_AT, CRC_AT, seq, index);
  if (!page.subarray(DATA_PAYLOAD_AT, CRC_AT).equals(expected.subarray(DATA_PAYLOAD_AT, CRC_AT))) return `data page ${index} of transaction ${seq} has a wrong payload`;
  return { seq, index, txPages, crc: page.readUInt32LE(CRC_AT) };
}

export function encodeCommit(seq: number, pages: number[], crcs: number[]): Buffer {
  const page = Buffer.alloc(PAGE_SIZE);
  page.write(COMMIT_MAGIC, 0, 'latin1');
  page.writeBigUInt64LE(BigInt(seq), 8);
  page.writeUInt32LE(pages.length, 16);
  pages.forEach((p, i) => { page.writeUInt32LE(p, 32 + 8 * i); page.writeUInt32LE(crcs[i], 36 + 8 * i); });
  return seal(page);
}

export interface CommitRecord { seq: number; pages: number[]; crcs: number[] }

export function decodeCommit(page: Buffer, slot: number): CommitRecord | null | string {
  if (isZero(page)) return null;
  if (page.toString('latin1', 0, 8) !== COMMIT_MAGIC) return `log slot ${slot} holds something else than a commit record`;
  if (!pageIntact(page)) return `log slot ${slot} is torn (checksum mismatch)`;
  const count = page.readUInt32LE(16);
  if (count < 1 || count > MAX_TX_PAGES) return `log slot ${slot} names ${count} pages`;
  return {
    seq: Number(page.readBigUInt64LE(8)),
    pages: Array.from({ length: count }, (_, i) => page.readUInt32LE(32 + 8 * i)),
    crcs: Array.from({ length: count }, (_, i) => page.readUInt32LE(36 + 8 * i)),
  };
}

/** Byte offset of a page. */
export const pageOffset = (page: number): number => page * PAGE_SIZE;
export const commitPage = (layout: Layout, seq: number): number => 1 + (seq % layout.logPages);

/** Small deterministic PRNG (xorshift32) for the workload's choice of pages. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 0x2545f491;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000; };
}

/** The pages one transaction writes: `count` distinct data pages. */
export function pickPages(layout: Layout, random: () => number, count: number): number[] {
  const set = new Set<number>();
  while (set.size < count) set.add(layout.dataStart + Math.floor(random() * layout.dataPages));
  return [...set];
}
