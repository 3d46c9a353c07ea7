/**
 * The guest-agent channel: a KVM guest through the QEMU guest agent's socket
 * (guest-fsfreeze-freeze-list / guest-fsfreeze-status / guest-fsfreeze-thaw, guest-get-fsinfo,
 * guest-exec for the scripts).
 *
 * The agent has no freeze timeout of its own, so the watchdog is a detached local process that
 * thaws through the same socket at the deadline, or at once when Stillpoint dies.
 * Note: guest-fsfreeze-thaw is guest-wide (it thaws every frozen filesystem of the guest).
 */
import { StillpointError } from '../../core/errors.ts';
import type { ArmedWatchdog, FreezeResult, GuestChannel, MountTable, ScriptResult, ThawReport } from './channel.ts';
import type { FreezeTarget, MountEntry } from './mounts.ts';
import type { QgaChannelOptions } from './options.ts';
import { GuestAgentError, withAgent } from './qga-client.ts';
import { spawnWatchdog } from './watchdog-spawn.ts';

interface GuestInfo {
  version: string;
  supported_commands: Array<{ name: string; enabled: boolean }>;
}

interface GuestFilesystemInfo {
  name: string;
  mountpoint: string;
  type: string;
}

interface GuestExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  'err-data'?: string;
}

const NEEDED = ['guest-fsfreeze-freeze-list', 'guest-fsfreeze-status', 'guest-fsfreeze-thaw', 'guest-get-fsinfo'];

export class QgaChannel implements GuestChannel {
  readonly description: string;

  constructor(
    private readonly options: QgaChannelOptions,
    private readonly where: string,
  ) {
    this.description = `qga ${options.socket}`;
  }

  private agent<T>(fn: Parameters<typeof withAgent<T>>[2]): Promise<T> {
    return withAgent(this.options.socket, this.options.requestTimeoutMs, fn);
  }

  async probe(): Promise<void> {
    await this.agent(async (agent) => {
      const info = await agent.execute<GuestInfo>('guest-info');
      const enabled = new Set(info.supported_commands.filter((c) => c.enabled).map((c) => c.name));
      const missing = NEEDED.filter((name) => !enabled.has(name));
      if (missing.length > 0) {
        throw new StillpointError(`the guest agent ${info.version} does not allow ${missing.join(', ')}`, {
          where: this.where,
          hint: 'Enable those commands in the guest agent (qemu-ga --block-rpcs / the allow list in /etc/qemu/qemu-ga.conf)',
        });
      }
      const status = await agent.execute<string>('guest-fsfreeze-status');
      if (status !== 'thawed') {
        throw new StillpointError(`the guest's filesystems are ${status} already (another freeze is in progress)`, {
          where: this.where,
          hint: 'Wait for the other backup to finish, or thaw with guest-fsfreeze-thaw',
        });
      }
    });
  }

  async mountTable(): Promise<MountTable> {
    const filesystems = await this.agent((agent) => agent.execute<GuestFilesystemInfo[]>('guest-get-fsinfo'));
    const mounts: MountEntry[] = filesystems.map((fs) => ({
      mountPoint: fs.mountpoint,
      device: fs.name,
      fsType: fs.type,
      source: `/dev/${fs.name}`,
      // The agent reports no mount flags; read-only filesystems are skipped by the agent itself.
      readOnly: false,
    }));
    return {
      mounts,
      loopDevices: new Set(filesystems.filter((fs) => /^loop\d+$/.test(fs.name)).map((fs) => fs.name)),
      note: 'guest-get-fsinfo lists only filesystems on block devices, which the guest agent can freeze',
    };
  }

  async runScript(command: string, timeoutMs: number): Promise<ScriptResult> {
    const until = Date.now() + timeoutMs;
    try {
      return await this.agent(async (agent) => {
        const { pid } = await agent.execute<{ pid: number }>('guest-exec', {
          path: '/bin/sh',
          arg: ['-c', command],
          'capture-output': true,
        });
        for (;;) {
          const status = await agent.execute<GuestExecStatus>('guest-exec-status', { pid });
          if (status.exited) {
            const stderr = status['err-data'] ? Buffer.from(status['err-data'], 'base64').toString('utf8').trim() : '';
            const tail = stderr ? `: ${stderr.split('\n').slice(-3).join(' | ')}` : '';
            if (status.signal !== undefined) return { ok: false, summary: `killed by signal ${status.signal}${tail}` };
            return { ok: status.exitcode === 0, summary: `exit code ${status.exitcode}${tail}` };
          }
          if (Date.now() > until) {
            // The agent cannot kill what it started; say so.
            return { ok: false, summary: `timed out after ${timeoutMs} ms (guest pid ${pid} is still running; the guest agent cannot stop it)` };
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      });
    } catch (error) {
      return { ok: false, summary: error instanceof Error ? error.message : String(error) };
    }
  }

  armWatchdog(_targets: FreezeTarget[], deadlineMs: number): Promise<ArmedWatchdog> {
    return spawnWatchdog(
      { kind: 'qga', socket: this.options.socket, requestTimeoutMs: this.options.requestTimeoutMs },
      deadlineMs,
      this.where,
    );
  }

  async freeze(targets: FreezeTarget[], deadlineAt: number): Promise<FreezeResult> {
    const mountpoints = targets.map((t) => t.mountPoint);
    let frozenCount: number;
    try {
      frozenCount = await this.agent((agent) =>
        agent.execute<number>('guest-fsfreeze-freeze-list', { mountpoints }, Math.max(1, deadlineAt - Date.now())),
      );
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      // On a failed freeze the agent thaws what it froze; after a timeout the freeze may still be
      // running, so thaw explicitly too.
      const thawed = await this.thaw(targets);
      const failed = error instanceof GuestAgentError ? targets.find((t) => reason.includes(`${t.mountPoint}:`)) : undefined;
      return {
        ok: false,
        failures: [{ target: failed, reason }],
        rolledBack: targets.filter((t) => t !== failed),
        stillFrozen: thawed.filter((r) => r.state === 'failed').map((r) => ({ target: r.target, reason: r.reason ?? 'thaw failed' })),
      };
    }
    if (frozenCount === targets.length) return { ok: true };
    const thawed = await this.thaw(targets);
    return {
      ok: false,
      failures: [
        {
          target: undefined,
          reason:
            `the guest agent froze ${frozenCount} of the ${targets.length} filesystems asked for (${mountpoints.join(', ')}); ` +
            'it skips filesystems that cannot be frozen or are frozen already',
        },
      ],
      rolledBack: targets,
      stillFrozen: thawed.filter((r) => r.state === 'failed').map((r) => ({ target: r.target, reason: r.reason ?? 'thaw failed' })),
    };
  }

  async thaw(targets: FreezeTarget[]): Promise<ThawReport[]> {
    try {
      return await this.agent(async (agent) => {
        const status = await agent.execute<string>('guest-fsfreeze-status');
        if (status === 'thawed') {
          return targets.map((target) => ({
            target,
            state: 'already-thawed' as const,
            reason: 'the guest was no longer frozen when Stillpoint thawed it',
          }));
        }
        await agent.execute<number>('guest-fsfreeze-thaw', undefined, Math.max(this.options.requestTimeoutMs, 30_000));
        return targets.map((target) => ({ target, state: 'thawed' as const }));
      });
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return targets.map((target) => ({ target, state: 'failed' as const, reason }));
    }
  }

  async thawEverything(): Promise<boolean> {
    return this.agent(async (agent) => {
      if ((await agent.execute<string>('guest-fsfreeze-status')) === 'thawed') return false;
      await agent.execute<number>('guest-fsfreeze-thaw', undefined, Math.max(this.options.requestTimeoutMs, 30_000));
      return true;
    });
  }

  async close(): Promise<void> {}
}
