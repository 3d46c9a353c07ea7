/**
 * The fsfreeze quiescer: freeze a Linux guest's filesystems (through its channel) for no longer
 * than a deadline, and say per filesystem what consistency the checkpoint got.
 *
 * freeze():  probe → choose filesystems → pre-freeze script → arm watchdog → freeze in order
 *            (on failure: thaw what was frozen, post-thaw script, throw FreezeFailedError)
 * thaw():    thaw in reverse → disarm watchdog → post-thaw script → outcome
 */
import createDebug from 'debug';
import { StillpointError } from '../../core/errors.ts';
import type { PluginContext } from '../../core/plugin.ts';
import type { FrozenGuest, QuiesceOutcome, QuiesceReadiness, Quiescer } from '../../core/contracts/quiescer.ts';
import type { VmFacts } from '../../core/contracts/vm.ts';
import type { ArmedWatchdog, FreezeResult, GuestChannel, ScriptResult, ThawReport } from './channel.ts';
import { LocalChannel, refuseOwnFilesystems } from './local.ts';
import { describeTarget, selectLikeVssDaemon, selectMountPoints, type FreezeTarget } from './mounts.ts';
import { DEFAULT_DEADLINE_MS, type ChannelOptions, type FsfreezeOptions, type GuestOptions } from './options.ts';
import { QgaChannel } from './qga.ts';
import { SshChannel } from './ssh.ts';

const debug = createDebug('stillpoint:fsfreeze');

type Detail = QuiesceOutcome['details'][number];

/** A freeze that did not happen; nothing is left frozen (or the watchdog thaws it by the deadline). */
export class FreezeFailedError extends StillpointError {
  /** What each filesystem got: all `crash`, with the reason. */
  readonly outcome: QuiesceOutcome;
  constructor(message: string, options: { where: string; hint?: string; cause?: unknown; outcome: QuiesceOutcome }) {
    super(message, options);
    this.outcome = options.outcome;
  }
}

export type ChannelOpener = (channel: ChannelOptions, where: string) => Promise<GuestChannel>;

export function defaultChannelOpener(context: PluginContext): ChannelOpener {
  return async (channel, where) => {
    switch (channel.type) {
      case 'local':
        return new LocalChannel();
      case 'ssh':
        return SshChannel.connect(channel, context.configDir, where);
      case 'qga':
        return new QgaChannel(channel, where);
    }
  };
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class FsfreezeQuiescer implements Quiescer {
  readonly name = 'fsfreeze';

  constructor(
    private readonly options: FsfreezeOptions,
    private readonly context: PluginContext,
    private readonly openChannel: ChannelOpener = defaultChannelOpener(context),
  ) {}

  /** The configured guest for a VM, looked up by name, then by id. */
  guestFor(vm: VmFacts): { key: string; guest: GuestOptions } | undefined {
    for (const key of [vm.name, vm.id]) {
      const guest = this.options.guests[key];
      if (guest) return { key, guest };
    }
    return undefined;
  }

  serves(vm: VmFacts): boolean {
    if (vm.guestOs !== 'linux') return false;
    return this.guestFor(vm) !== undefined || (this.options.readinessFromIntegration && vm.integration.vssDaemon !== undefined);
  }

  /** The longest freeze for a guest: the smallest of the engine's, the guest's and the plugin's deadline. */
  deadlineFor(guest: GuestOptions, requestedMs?: number): number {
    const configured = guest.deadlineMs ?? this.options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    return requestedMs !== undefined && requestedMs > 0 ? Math.min(requestedMs, configured) : configured;
  }

  async readiness(vm: VmFacts): Promise<QuiesceReadiness> {
    const found = this.guestFor(vm);
    if (!found) {
      if (vm.integration.vssDaemon === undefined) {
        return { ready: false, reason: `no fsfreeze channel is configured for VM ${vm.name} (plugin fsfreeze, options.guests)` };
      }
      return vm.integration.vssDaemon
        ? { ready: true, reason: 'the Hyper-V VSS daemon (hv_vss_daemon) answers in the guest; the host quiesces it on a production checkpoint' }
        : { ready: false, reason: 'the Hyper-V VSS daemon (hv_vss_daemon) is not running in the guest (install hyperv-daemons / linux-cloud-tools)' };
    }
    const where = this.where(vm, found.key);
    let channel: GuestChannel | undefined;
    try {
      channel = await this.openChannel(found.guest.channel, where);
      const targets = await this.chooseTargets(channel, found.guest, where);
      return {
        ready: true,
        reason: `can freeze ${targets.map(describeTarget).join(', ')} over ${channel.description} for at most ${this.deadlineFor(found.guest)} ms`,
      };
    } catch (error) {
      return { ready: false, reason: message(error) };
    } finally {
      await channel?.close();
    }
  }

  private where(vm: VmFacts, key: string): string {
    return `VM ${vm.name} (fsfreeze options.guests.${key})`;
  }

  private async chooseTargets(channel: GuestChannel, guest: GuestOptions, where: string, forThaw = false): Promise<FreezeTarget[]> {
    if (!forThaw) await channel.probe();
    const table = await channel.mountTable();
    const targets = guest.freezeAll
      ? selectLikeVssDaemon(table.mounts, table.loopDevices)
      : selectMountPoints(table.mounts, guest.mountPoints ?? [], where, table.note);
    if (targets.length === 0) {
      throw new StillpointError(`no filesystem to freeze over ${channel.description}`, {
        where,
        hint: 'freezeAll found no writable block-device filesystem; list mountPoints instead',
      });
    }
    if (guest.channel.type === 'local' && !guest.freezeAll && !forThaw) await refuseOwnFilesystems(table.mounts, targets, this.context.stateDir);
    return targets;
  }

  /**
   * Thaw what a crashed run may have left frozen (called by the journal's reconcile and after a
   * failed freeze). True if something was still frozen and is now thawed.
   */
  async thawOrphaned(vm: VmFacts): Promise<boolean> {
    const found = this.guestFor(vm);
    if (!found) return false;
    const where = this.where(vm, found.key);
    const channel = await this.openChannel(found.guest.channel, where);
    try {
      if (channel.thawEverything) return await channel.thawEverything();
      const targets = await this.chooseTargets(channel, found.guest, where, true);
      const reports = await channel.thaw(targets);
      const failed = reports.filter((r) => r.state === 'failed');
      if (failed.length > 0) {
        throw new StillpointError(`could not thaw ${failed.map((r) => `${describeTarget(r.target)}: ${r.reason}`).join('; ')}`, {
          where,
          hint: 'Thaw by hand on the guest (fsfreeze -u <mount point>)',
        });
      }
      await channel.disarmOrphanWatchdogs?.(targets);
      return reports.some((r) => r.state === 'thawed');
    } finally {
      await channel.close();
    }
  }

  async freeze(vm: VmFacts, options: { deadlineMs: number }): Promise<FrozenGuest> {
    const found = this.guestFor(vm);
    const where = found ? this.where(vm, found.key) : `VM ${vm.name}`;
    if (!found) {
      throw new StillpointError('no fsfreeze channel is configured for this VM, so it cannot be frozen from here', {
        where,
        hint: 'Add the VM by name or id under the fsfreeze plugin options.guests (channel local, ssh or qga)',
      });
    }
    const { guest } = found;
    const deadlineMs = this.deadlineFor(guest, options.deadlineMs);
    const channel = await this.openChannel(guest.channel, where);

    let targets: FreezeTarget[];
    try {
      targets = await this.chooseTargets(channel, guest, where);
    } catch (error) {
      await channel.close();
      throw error;
    }
    const notQuiesced = (reason: string, failures: Map<FreezeTarget, string> = new Map()): QuiesceOutcome => ({
      consistency: 'crash',
      details: targets.map((target) => ({
        target: target.mountPoint,
        consistency: 'crash',
        reason: failures.get(target) ?? reason,
      })),
    });
    const postThaw = async (): Promise<ScriptResult | undefined> =>
      guest.postThaw ? channel.runScript(guest.postThaw.command, guest.postThaw.timeoutMs) : undefined;
    const giveUp = async (problem: string, outcome: QuiesceOutcome, cause?: unknown, hint?: string): Promise<never> => {
      const after = await postThaw();
      await channel.close();
      const postNote = after && !after.ok ? `; the post-thaw script failed too (${after.summary})` : '';
      throw new FreezeFailedError(`${problem}${postNote}`, {
        where,
        cause,
        outcome,
        hint: hint ?? 'The checkpoint can still be taken crash-consistent (consistency policy "prefer")',
      });
    };

    debug('%s: freezing %s over %s for at most %d ms', where, targets.map(describeTarget).join(', '), channel.description, deadlineMs);
    if (guest.preFreeze) {
      const pre = await channel.runScript(guest.preFreeze.command, guest.preFreeze.timeoutMs);
      if (!pre.ok) {
        await giveUp(
          `the pre-freeze script failed (${pre.summary}); not freezing`,
          notQuiesced(`not frozen: the pre-freeze script failed (${pre.summary})`),
          undefined,
          'Fix the pre-freeze script (run it by hand on the guest), or take the backup crash-consistent',
        );
      }
    }

    let watchdog: ArmedWatchdog;
    try {
      watchdog = await channel.armWatchdog(targets, deadlineMs);
    } catch (error) {
      return giveUp(`could not arm the freeze watchdog, so not freezing: ${message(error)}`, notQuiesced('not frozen: no watchdog'), error);
    }

    // Leave the last moments of the deadline to the thaw.
    const freezeBy = watchdog.armedAt + deadlineMs - Math.min(500, deadlineMs / 10);
    let result: FreezeResult;
    try {
      result = await channel.freeze(targets, freezeBy);
    } catch (error) {
      result = { ok: false, failures: [{ target: undefined, reason: message(error) }], rolledBack: [], stillFrozen: [] };
    }
    if (!result.ok) {
      const failures = new Map<FreezeTarget, string>();
      for (const failure of result.failures) if (failure.target) failures.set(failure.target, `freeze failed: ${failure.reason}`);
      const failedText = result.failures
        .map((f) => (f.target ? `${describeTarget(f.target)}: ${f.reason}` : f.reason))
        .join('; ');
      for (const target of result.rolledBack) failures.set(target, `frozen, then thawed again because another filesystem failed (${failedText})`);
      for (const { target, reason } of result.stillFrozen) {
        failures.set(target, `could not be thawed after the failure (${reason}); the watchdog thaws it by the deadline`);
      }
      // With everything thawed, stop the watchdog; otherwise it is what thaws the rest.
      if (result.stillFrozen.length === 0) await watchdog.disarm();
      const thawedText = result.rolledBack.length ? `; thawed again: ${result.rolledBack.map((t) => t.mountPoint).join(', ')}` : '';
      return giveUp(`could not freeze ${failedText}${thawedText}`, notQuiesced('not frozen: another filesystem failed to freeze', failures));
    }

    const frozenAt = Date.now();
    debug('%s: frozen (%d filesystems)', where, targets.length);
    let thawing: Promise<QuiesceOutcome> | undefined;
    return {
      thaw: () => {
        thawing ??= this.thaw({ channel, guest, targets, watchdog, deadlineMs, frozenAt, where });
        return thawing;
      },
    };
  }

  private async thaw(session: {
    channel: GuestChannel;
    guest: GuestOptions;
    targets: FreezeTarget[];
    watchdog: ArmedWatchdog;
    deadlineMs: number;
    frozenAt: number;
    where: string;
  }): Promise<QuiesceOutcome> {
    const { channel, guest, targets, watchdog, deadlineMs, frozenAt, where } = session;
    const thawStartedAt = Date.now();
    let reports: ThawReport[];
    try {
      reports = await channel.thaw(targets);
    } catch (error) {
      reports = targets.map((target) => ({ target, state: 'failed', reason: message(error) }));
    }
    const allThawed = reports.every((r) => r.state !== 'failed');
    // Disarm only once everything is thawed: otherwise the watchdog is what thaws the rest.
    const fired = allThawed ? await watchdog.disarm() : { fired: false, firedAt: undefined, reason: undefined };
    const overran = thawStartedAt > watchdog.armedAt + deadlineMs;
    // The local watchdogs say when they fired; the SSH one does not (its thaw then shows as already-thawed).
    const firedFirst = fired.fired && fired.firedAt !== undefined && fired.firedAt <= thawStartedAt;
    const heldMs = thawStartedAt - frozenAt;

    const details: Detail[] = reports.map(({ target, state, reason }) => {
      if (state === 'already-thawed' || overran || firedFirst) {
        return {
          target: target.mountPoint,
          consistency: 'crash',
          reason: `the freeze reached its deadline of ${deadlineMs} ms before the thaw (${heldMs} ms); the watchdog thawed it, so the checkpoint may postdate the freeze${reason ? ` (${reason})` : ''}`,
        };
      }
      const base = `${target.fsType} on ${target.source} frozen for ${heldMs} ms${guest.preFreeze ? ' after the pre-freeze script' : ''}`;
      return {
        target: target.mountPoint,
        consistency: 'application',
        reason: state === 'failed' ? `${base}; but the thaw failed (${reason}); the watchdog thaws it by the deadline` : base,
      };
    });

    const after = guest.postThaw ? await channel.runScript(guest.postThaw.command, guest.postThaw.timeoutMs) : undefined;
    await channel.close();
    const consistency = details.every((d) => d.consistency === 'application') ? 'application' : 'crash';
    if (after && !after.ok) {
      details.push({
        target: 'post-thaw script',
        consistency,
        reason: `failed (${after.summary}); the checkpoint is not affected, but the application may need attention`,
      });
    }
    debug('%s: thawed after %d ms: %s', where, heldMs, consistency);
    return { consistency, details };
  }
}
