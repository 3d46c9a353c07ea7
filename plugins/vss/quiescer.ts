import type { FrozenGuest, QuiesceOutcome, QuiesceReadiness, Quiescer } from '../../core/contracts/quiescer.ts';
import type { Checkpoint } from '../../core/contracts/driver.ts';
import type { VmFacts } from '../../core/contracts/vm.ts';
import { StillpointError } from '../../core/errors.ts';

/**
 * Windows guests under Hyper-V. Hyper-V's VMMS quiesces the guest itself: for an
 * application-consistent checkpoint it asks the guest's "Backup (volume shadow copy)" integration
 * service, which runs a VSS backup inside the guest (writers freeze, the checkpoint is taken, writers
 * thaw). So for a Hyper-V VM this quiescer does not freeze anything: it checks readiness beforehand
 * (the integration service is enabled and answering) and turns the checkpoint's achieved consistency
 * into the outcome kept with the restore point.
 */
export class WindowsVssQuiescer implements Quiescer {
  readonly name = 'vss';

  serves(vm: VmFacts): boolean {
    return vm.guestOs === 'windows';
  }

  async readiness(vm: VmFacts): Promise<QuiesceReadiness> {
    const vss = vm.integration.vssRequestor;
    if (!vss) return { ready: false, reason: `the host reports no Backup (volume shadow copy) integration service for ${vm.name}` };
    if (!vss.enabled) {
      return { ready: false, reason: `the Backup (volume shadow copy) integration service of ${vm.name} is disabled (Enable-VMIntegrationService)` };
    }
    if (!vss.running) {
      return { ready: false, reason: `the Backup (volume shadow copy) integration service of ${vm.name} does not answer (guest off, integration services not installed, or the Hyper-V Volume Shadow Copy Requestor service stopped in the guest)` };
    }
    if (vm.state !== 'running') return { ready: true, reason: `${vm.name} is ${vm.state}: its disks are consistent without quiescing` };
    return { ready: true, reason: 'the Backup (volume shadow copy) integration service is enabled and answering; Hyper-V quiesces the guest through it' };
  }

  async freeze(vm: VmFacts, _options?: { deadlineMs: number }): Promise<FrozenGuest> {
    throw new StillpointError('a Windows guest is quiesced by its hypervisor, not by Stillpoint', {
      where: `VM ${vm.name}`,
      hint: 'Use a driver that quiesces on checkpoint (Hyper-V production or recovery checkpoints); the VSS quiescer only checks readiness and records the outcome',
    });
  }
}

/** The outcome of Hyper-V's quiescing, from what the checkpoint achieved, for the restore point. */
export function outcomeOfCheckpoint(vm: VmFacts, checkpoint: Pick<Checkpoint, 'consistency' | 'consistencyReason'>): QuiesceOutcome {
  return {
    consistency: checkpoint.consistency,
    details: [{
      target: `${vm.name} (VSS in the guest, through Hyper-V)`,
      consistency: checkpoint.consistency,
      ...(checkpoint.consistencyReason ? { reason: checkpoint.consistencyReason } : {}),
    }],
  };
}
