/**
 * The verifier: given a disk the lab's guest workload wrote (a restored raw image, or a VHDX
 * chain), says whether the workload's data is consistent — no torn transaction, nothing written
 * but not committed — and which transaction is the last one it holds.
 */
import { open } from 'node:fs/promises';
import { StillpointError } from '../../core/errors.ts';
import {
  commitPage, decodeCommit, decodeDataPage, decodeSuperblock, PAGE_SIZE, pageOffset, type CommitRecord, type Layout,
} from './guest/format.ts';

/** Anything that reads bytes of a virtual disk (a raw file, an `OpenDisk`). */
export interface PageSource {
  read(offset: number, target: Buffer, length?: number, targetOffset?: number): Promise<void>;
}

export interface Verdict {
  /** True when the disk holds whole, committed transactions only (what a quiesced backup gives). */
  consistent: boolean;
  /** The last committed transaction the disk holds (0 when none). */
  lastTransaction: number;
  /** Transactions only partly on the disk (some of their pages hold older data). */
  torn: number[];
  /** Transactions whose pages are all on the disk but whose commit record is not. */
  uncommitted: number[];
  /** Every problem, in words. */
  problems: string[];
  vmId: string;
  diskId: string;
}

async function readPages(source: PageSource, first: number, count: number): Promise<Buffer> {
  const buf = Buffer.alloc(count * PAGE_SIZE);
  const chunk = 256 * PAGE_SIZE;
  for (let at = 0; at < buf.length; at += chunk) {
    const length = Math.min(chunk, buf.length - at);
    await source.read(pageOffset(first) + at, buf, length, at);
  }
  return buf;
}

export async function verifyDisk(source: PageSource, where = 'disk'): Promise<Verdict> {
  const superblock = decodeSuperblock(await readPages(source, 0, 1));
  if (typeof superblock === 'string') {
    throw new StillpointError(superblock, { where, hint: 'verify a disk of a lab VM (restored raw image or VHDX chain)' });
  }
  const layout: Layout = superblock;
  const problems: string[] = [];

  const log = await readPages(source, 1, layout.logPages);
  const commits = new Map<number, CommitRecord>();
  for (let slot = 0; slot < layout.logPages; slot++) {
    const record = decodeCommit(log.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE), slot);
    if (typeof record === 'string') { problems.push(record); continue; }
    if (!record) continue;
    if (commitPage(layout, record.seq) !== 1 + slot) { problems.push(`log slot ${slot} holds transaction ${record.seq}, which belongs in another slot`); continue; }
    commits.set(record.seq, record);
  }
  const lastCommitted = commits.size ? Math.max(...commits.keys()) : 0;

  const data = await readPages(source, layout.dataStart, layout.dataPages);
  const seqOf = new Map<number, number>();
  const pages = new Map<number, { txPages: number[]; crc: number }>();
  for (let i = 0; i < layout.dataPages; i++) {
    const index = layout.dataStart + i;
    const page = decodeDataPage(data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), index);
    if (typeof page === 'string') { problems.push(page); continue; }
    if (!page) continue;
    seqOf.set(index, page.seq);
    pages.set(index, page);
  }

  // A transaction is torn when one of its pages is on the disk while a sibling still holds older data.
  const torn = new Set<number>();
  const present = new Set<number>();
  for (const [index, page] of pages) {
    const seq = seqOf.get(index)!;
    present.add(seq);
    for (const sibling of page.txPages) {
      if ((seqOf.get(sibling) ?? 0) < seq) torn.add(seq);
    }
  }
  // The newest commit's pages must all be there (it was written after them).
  const newest = commits.get(lastCommitted);
  if (newest) {
    newest.pages.forEach((p, i) => {
      const seq = seqOf.get(p) ?? 0;
      if (seq < newest.seq) torn.add(newest.seq);
      else if (seq === newest.seq && pages.get(p)!.crc !== newest.crcs[i]) problems.push(`page ${p} does not match the commit record of transaction ${newest.seq}`);
    });
  }
  const uncommitted = [...present].filter((seq) => seq > lastCommitted && !torn.has(seq)).sort((a, b) => a - b);
  const tornList = [...torn].sort((a, b) => a - b);
  for (const seq of tornList) problems.push(`transaction ${seq} is torn: only part of its pages are on the disk`);
  for (const seq of uncommitted) problems.push(`transaction ${seq} is on the disk but not committed (it was in flight)`);
  return {
    consistent: problems.length === 0,
    lastTransaction: lastCommitted,
    torn: tornList,
    uncommitted,
    problems,
    vmId: layout.vmId,
    diskId: layout.diskId,
  };
}

/** Verify a raw disk image (e.g. what `stillpoint restore` wrote). */
export async function verifyRawImage(path: string): Promise<Verdict> {
  const handle = await open(path, 'r');
  try {
    return await verifyDisk({
      async read(offset, target, length, targetOffset = 0) {
        length ??= target.length - targetOffset;
        const { bytesRead } = await handle.read(target, targetOffset, length, offset);
        if (bytesRead < length) target.fill(0, targetOffset + bytesRead, targetOffset + length);
      },
    }, path);
  } finally {
    await handle.close();
  }
}
