import type { VmFacts } from './vm.ts';

export interface QuiesceReadiness {
  ready: boolean;
  /** Human-readable reason, e.g. "VSS integration service is disabled". */
  reason: string;
}

/** Per filesystem (or per VSS writer) outcome, kept with the restore point. */
export interface QuiesceOutcome {
  consistency: 'application' | 'crash';
  details: Array<{ target: string; consistency: 'application' | 'crash'; reason?: string }>;
}

export interface FrozenGuest {
  /** Thaw; safe to call more than once. Resolves with what was achieved. */
  thaw(): Promise<QuiesceOutcome>;
}

/**
 * Guest quiescing for one guest OS (VSS for Windows, fsfreeze for Linux).
 * When the VM's driver quiesces by itself (`quiescesOnCheckpoint`), the engine only asks for
 * `readiness`; otherwise it calls `freeze` before the checkpoint and thaws right after it.
 */
export interface Quiescer {
  readonly name: string;
  serves(vm: VmFacts): boolean;
  readiness(vm: VmFacts): Promise<QuiesceReadiness>;
  /** Freeze within `deadlineMs`; the freeze must not outlive the deadline even if this process dies. */
  freeze(vm: VmFacts, options: { deadlineMs: number }): Promise<FrozenGuest>;
  /**
   * Thaw a guest that a crashed run left frozen (the journal's reconcile calls it for every freeze
   * intent it finds). Resolves `true` if the guest was frozen and is now thawed, `false` if it was not
   * frozen. Optional: without it the reconcile relies on the freeze's own deadline.
   */
  thawOrphaned?(vm: VmFacts): Promise<boolean>;
}
