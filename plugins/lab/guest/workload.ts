/**
 * The guest workload: a child process per running lab VM that keeps writing transactions to its
 * disks through the native VHDX library (see format.ts for what it writes). The host (the lab
 * driver) talks to it over the IPC channel (protocol.ts): hold (freeze at a transaction boundary,
 * or stop at once), resume on new tops (after a checkpoint or a merge), stop.
 *
 * If the host goes away (IPC disconnect) the guest finishes its transaction and shuts down cleanly.
 * A freeze that is not thawed within `holdLimitMs` ends by itself (as VSS's hold limit does).
 */
import { openSync, writeSync, closeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import createDebug from 'debug';
import { VhdxDisk } from '../../vhdx/index.ts';
import {
  commitPage, decodeCommit, decodeSuperblock, encodeCommit, encodeDataPage, pageOffset, pickPages, prng, PAGE_SIZE, type Layout,
} from './format.ts';
import type { GuestMessage, HostMessage, WorkloadDisk, WorkloadSettings } from './protocol.ts';

const debug = createDebug('stillpoint:lab:guest');

interface DiskState {
  spec: WorkloadDisk;
  layout: Layout;
  disk?: VhdxDisk;
  seq: number;
  changeFd: number;
}

function send(message: GuestMessage): void {
  process.send?.(message);
}

async function openDisk(path: string): Promise<VhdxDisk> {
  return VhdxDisk.open(path, { writable: true });
}

async function readLayout(disk: VhdxDisk, where: string): Promise<{ layout: Layout; seq: number }> {
  const page = Buffer.alloc(PAGE_SIZE);
  await disk.read(0, page, PAGE_SIZE);
  const layout = decodeSuperblock(page);
  if (typeof layout === 'string') throw new Error(`${where}: ${layout}`);
  const log = Buffer.alloc(layout.logPages * PAGE_SIZE);
  await disk.read(pageOffset(1), log, log.length);
  let seq = 0;
  for (let slot = 0; slot < layout.logPages; slot++) {
    const rec = decodeCommit(log.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE), slot);
    if (rec && typeof rec !== 'string') seq = Math.max(seq, rec.seq);
  }
  return { layout, seq };
}

class Workload {
  readonly #disks: DiskState[] = [];
  readonly #settings: WorkloadSettings;
  readonly #random: () => number;
  #hold: { id: number; mode: 'boundary' | 'now'; hang: boolean } | undefined;
  #held = false;
  #heldAt = 0;
  #heldId = -1;
  #thawedEarly = false;
  #wake: (() => void) | undefined;
  #stopping: number | undefined;
  #midTransaction = false;

  constructor(settings: WorkloadSettings) {
    this.#settings = settings;
    this.#random = prng(settings.seed);
  }

  async init(disks: WorkloadDisk[]): Promise<void> {
    for (const spec of disks) {
      const disk = await openDisk(spec.path);
      const { layout, seq } = await readLayout(disk, spec.path);
      this.#disks.push({ spec, layout, disk, seq, changeFd: openSync(spec.changeLog, 'a') });
    }
  }

  lastTransaction(): Record<string, number> {
    return Object.fromEntries(this.#disks.map((d) => [d.spec.diskId, d.seq]));
  }

  request(message: HostMessage): void {
    switch (message.type) {
      case 'hold':
        this.#hold = { id: message.id, mode: message.mode, hang: !!message.hang };
        break;
      case 'cancel':
        if (this.#hold?.id === message.id) this.#hold = undefined;
        if (this.#heldId === message.id && this.#held) void this.#resume(message.id, {}, false);
        break;
      case 'resume':
        void this.#resume(message.id, message.paths, true);
        break;
      case 'stop':
        this.#stopping = message.id;
        break;
      default:
        break;
    }
    this.#wake?.();
  }

  /** Called at each point where writes may stop: between pages (`boundary` false) or between transactions. */
  async #checkpoint(boundary: boolean): Promise<void> {
    const hold = this.#hold;
    if (!hold || hold.hang || (hold.mode === 'boundary' && !boundary)) return;
    this.#hold = undefined;
    for (const d of this.#disks) {
      await d.disk!.flush();
      await d.disk!.close();
      d.disk = undefined;
    }
    this.#held = true;
    this.#heldAt = Date.now();
    this.#heldId = hold.id;
    this.#thawedEarly = false;
    send({ type: 'held', id: hold.id, lastTransaction: this.lastTransaction(), midTransaction: !boundary });
    // Wait until resumed (the resume reopens the disks); a freeze ends by itself after the hold limit.
    while (this.#held) {
      if (this.#stopping !== undefined) return;
      if (hold.mode === 'boundary' && Date.now() - this.#heldAt > this.#settings.holdLimitMs) {
        debug('freeze %d held longer than %d ms: thawing by itself', hold.id, this.#settings.holdLimitMs);
        this.#thawedEarly = true;
        await this.#reopen({});
        this.#held = false;
        return;
      }
      await new Promise<void>((resolve) => { this.#wake = resolve; setTimeout(resolve, 50); });
      this.#wake = undefined;
    }
  }

  async #reopen(paths: Record<string, string>): Promise<void> {
    for (const d of this.#disks) {
      if (paths[d.spec.diskId]) d.spec.path = paths[d.spec.diskId];
      if (!d.disk) d.disk = await openDisk(d.spec.path);
    }
  }

  async #resume(id: number, paths: Record<string, string>, reply: boolean): Promise<void> {
    try {
      if (this.#held && id === this.#heldId) {
        await this.#reopen(paths);
        this.#held = false;
        if (reply) send({ type: 'resumed', id, thawedEarly: false });
      } else if (reply) {
        // Already thawed by itself: reopen on the new tops anyway when asked to (the host decides).
        const early = this.#thawedEarly && id === this.#heldId;
        if (Object.keys(paths).length) {
          for (const d of this.#disks) { await d.disk?.close(); d.disk = undefined; }
          await this.#reopen(paths);
        }
        send({ type: 'resumed', id, thawedEarly: early });
      }
    } catch (error) {
      send({ type: 'error', id, message: (error as Error).message });
    } finally {
      this.#wake?.();
    }
  }

  async #write(d: DiskState, index: number, page: Buffer): Promise<void> {
    const record = Buffer.alloc(16);
    record.writeBigUInt64LE(BigInt(pageOffset(index)), 0);
    record.writeBigUInt64LE(BigInt(PAGE_SIZE), 8);
    writeSync(d.changeFd, record);
    await d.disk!.write(pageOffset(index), page);
  }

  async run(): Promise<void> {
    let turn = 0;
    while (this.#stopping === undefined) {
      await this.#checkpoint(true);
      if (this.#stopping !== undefined) break;
      const d = this.#disks[turn++ % this.#disks.length];
      const count = this.#settings.minPages + Math.floor(this.#random() * (this.#settings.maxPages - this.#settings.minPages + 1));
      const pages = pickPages(d.layout, this.#random, count);
      const seq = d.seq + 1;
      const crcs: number[] = [];
      this.#midTransaction = true;
      for (let i = 0; i < pages.length; i++) {
        if (i > 0) {
          if (this.#settings.pageDelayMs > 0) await sleep(this.#settings.pageDelayMs);
          await this.#checkpoint(false);
        }
        const page = encodeDataPage(seq, pages[i], pages);
        crcs.push(page.readUInt32LE(PAGE_SIZE - 4));
        await this.#write(d, pages[i], page);
      }
      if (this.#settings.pageDelayMs > 0) await sleep(this.#settings.pageDelayMs);
      await this.#checkpoint(false);
      await this.#write(d, commitPage(d.layout, seq), encodeCommit(seq, pages, crcs));
      d.seq = seq;
      this.#midTransaction = false;
      if (this.#settings.txGapMs > 0) await sleep(this.#settings.txGapMs);
    }
    for (const d of this.#disks) {
      if (d.disk) { await d.disk.flush(); await d.disk.close(); d.disk = undefined; }
      closeSync(d.changeFd);
    }
  }

  get stopId(): number | undefined { return this.#stopping; }
  get midTransaction(): boolean { return this.#midTransaction; }
}

let workload: Workload | undefined;
let runPromise: Promise<void> | undefined;

process.on('message', (message: HostMessage) => {
  if (message.type === 'init') {
    workload = new Workload(message.settings);
    workload.init(message.disks).then(() => {
      send({ type: 'ready', lastTransaction: workload!.lastTransaction() });
      runPromise = workload!.run().then(() => {
        send({ type: 'stopped', id: workload!.stopId ?? -1, lastTransaction: workload!.lastTransaction() });
        process.disconnect?.();
      }, (error: Error) => {
        send({ type: 'error', message: `guest workload failed: ${error.message}` });
        process.exitCode = 1;
        process.disconnect?.();
      });
    }, (error: Error) => {
      send({ type: 'error', message: `guest workload could not open its disks: ${error.message}` });
      process.exitCode = 1;
      process.disconnect?.();
    });
    return;
  }
  workload?.request(message);
});

// The host went away: finish the transaction, close the disks, exit.
process.on('disconnect', () => {
  if (workload && workload.stopId === undefined) workload.request({ type: 'stop', id: -1 });
  void runPromise;
});
