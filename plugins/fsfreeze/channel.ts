/**
 * A way to reach a Linux machine's filesystems: the machine Stillpoint runs on (`local`), a guest
 * over SSH (`ssh`), or a KVM guest through the QEMU guest agent (`qga`).
 *
 * One channel is opened per freeze and closed after the thaw. The quiescer drives it in this order:
 * `probe` → `mountTable` → pre-freeze script → `armWatchdog` → `freeze` → (checkpoint) → `thaw`
 * → watchdog `disarm` → post-thaw script → `close`.
 */
import type { FreezeTarget, MountEntry } from './mounts.ts';

export interface MountTable {
  mounts: MountEntry[];
  /** `major:minor` of loop block devices (hv_vss_daemon does not freeze those). */
  loopDevices: Set<string>;
  /** Said when a configured mount point is not in the table (e.g. the guest agent lists only block-device filesystems). */
  note?: string;
}

export interface ScriptResult {
  ok: boolean;
  /** Exit code, "timed out after N ms", or the error; with the end of stderr. */
  summary: string;
}

/** The result of freezing a list of targets; on failure nothing is left frozen. */
export type FreezeResult =
  | { ok: true }
  | {
      ok: false;
      /** The filesystems that failed (with why); empty target when the channel cannot tell which. */
      failures: Array<{ target: FreezeTarget | undefined; reason: string }>;
      /** The filesystems that were frozen and thawed again because of the failure. */
      rolledBack: FreezeTarget[];
      /** Filesystems the rollback could not thaw (the watchdog still covers them). */
      stillFrozen: Array<{ target: FreezeTarget; reason: string }>;
    };

export interface ThawReport {
  target: FreezeTarget;
  /** `thawed`: this thaw did it; `already-thawed`: it was not frozen any more (the watchdog or someone else thawed it). */
  state: 'thawed' | 'already-thawed' | 'failed';
  reason?: string;
}

export interface ArmedWatchdog {
  /** When the watchdog started counting (ms since epoch, this machine's clock); it thaws at `armedAt + deadlineMs` at the latest. */
  readonly armedAt: number;
  /** Stop the watchdog (after a successful thaw). Tells whether it had already fired, and when. */
  disarm(): Promise<{ fired: boolean; firedAt?: number; reason?: string }>;
}

export interface GuestChannel {
  /** E.g. "local", "ssh root@10.0.0.5:22", "qga /run/qga/web01.sock". */
  readonly description: string;
  /** Throws (with what is missing) when this channel cannot freeze: no fsfreeze, not root, agent command disabled... */
  probe(): Promise<void>;
  mountTable(): Promise<MountTable>;
  runScript(command: string, timeoutMs: number): Promise<ScriptResult>;
  /** Start a watchdog that is not this process and that thaws `targets` at `deadlineMs` from now, whatever happens here. */
  armWatchdog(targets: FreezeTarget[], deadlineMs: number): Promise<ArmedWatchdog>;
  /** Freeze all targets in order; if one fails, thaw those already frozen. Must finish by `deadlineAt`. */
  freeze(targets: FreezeTarget[], deadlineAt: number): Promise<FreezeResult>;
  /** Thaw all targets (in reverse order); never throws. */
  thaw(targets: FreezeTarget[]): Promise<ThawReport[]>;
  /**
   * For channels whose thaw is guest-wide (the guest agent): thaw whatever is frozen, without a
   * mount table (which a frozen guest agent refuses to give). Resolves true if something was frozen.
   */
  thawEverything?(): Promise<boolean>;
  /**
   * For channels whose watchdog lives on the guest (ssh): stop watchdogs a dead run left behind for
   * these targets (after they were thawed), so they cannot cut a later freeze short. Returns how many.
   */
  disarmOrphanWatchdogs?(targets: FreezeTarget[]): Promise<number>;
  close(): Promise<void>;
}
