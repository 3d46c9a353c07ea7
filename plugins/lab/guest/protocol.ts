/** Messages between the lab driver (the "host") and a guest workload process (the "guest"). */

export interface WorkloadDisk {
  diskId: string;
  /** Top of the disk's chain: the file the guest writes to. */
  path: string;
  /** Append-only change log (16-byte records: offset, length) for change tracking. */
  changeLog: string;
}

export interface WorkloadSettings {
  /** Pause between two page writes of one transaction (widens the window for torn cuts). */
  pageDelayMs: number;
  /** Pause between two transactions. */
  txGapMs: number;
  minPages: number;
  maxPages: number;
  seed: number;
  /** How long a freeze may hold writes before the guest thaws by itself (VSS's hold limit). */
  holdLimitMs: number;
}

export type HostMessage =
  | { type: 'init'; vmId: string; disks: WorkloadDisk[]; settings: WorkloadSettings }
  /** Stop writing and close the disks: at a transaction boundary (`boundary`, a freeze) or at once (`now`). */
  | { type: 'hold'; id: number; mode: 'boundary' | 'now'; hang?: boolean }
  /** Forget a hold whose answer came too late (the host gave up waiting). */
  | { type: 'cancel'; id: number }
  /** Reopen the disks (on these tops, by disk id) and go on writing. */
  | { type: 'resume'; id: number; paths: Record<string, string> }
  | { type: 'stop'; id: number };

export type GuestMessage =
  | { type: 'ready'; lastTransaction: Record<string, number> }
  | { type: 'held'; id: number; lastTransaction: Record<string, number>; midTransaction: boolean }
  | { type: 'resumed'; id: number; thawedEarly: boolean }
  | { type: 'stopped'; id: number; lastTransaction: Record<string, number> }
  | { type: 'error'; id?: number; message: string };
