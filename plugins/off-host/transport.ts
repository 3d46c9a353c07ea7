import { randomBytes } from 'node:crypto';
import createDebug from 'debug';
import type { PresentedSnapshot, VolumeRef } from '../../core/contracts/snapshot.ts';
import type { Engine } from '../../core/engine/engine.ts';
import { disksToRead, type Transport, type TransportSession, type TransportSink } from '../../core/engine/transport.ts';
import type { DiskResult, GroupRun, PresentedDisk, VmRun } from '../../core/engine/types.ts';
import { StillpointError, TransientError } from '../../core/errors.ts';
import { ProxyTaskError } from './client.ts';
import type { ProxySpec } from './options.ts';
import type { ProxyPool } from './pool.ts';
import type { DiskTask } from './protocol.ts';

const debug = createDebug('stillpoint:off-host');

/** May the task succeed on another proxy? (the proxy was lost, or failed with a transient fault) */
export function isRetryable(error: unknown): boolean {
  return error instanceof TransientError || (error instanceof ProxyTaskError && error.retryable);
}

/** The passphrase travels only over a channel private to both ends: a started process's stdio or a unix socket. */
function privateChannel(spec: ProxySpec): boolean {
  return spec.host === undefined;
}

/**
 * The off-host transport: per group (one volume snapshot, made by the engine), the snapshot is
 * presented to the proxies that read it; per VM, a proxy that sees the volume gets a task (read these
 * chains at these paths in the snapshot, store them into this repository) and the disk records it
 * returns are attached to the VM's restore point. A VM whose proxy is lost (or fails transiently)
 * moves to another proxy that sees the volume, for the disks not yet stored, up to `retries` times.
 */
export class OffHostTransport implements Transport {
  readonly name = 'off-host';
  readonly grouping = 'volume' as const;
  readonly limitsProxies = true;

  constructor(
    private readonly engine: Engine,
    readonly pool: ProxyPool,
    private readonly options: { retries: number },
  ) {}

  whyNot(volume: VolumeRef): string | undefined {
    const why = this.pool.whyNot(volume.name);
    return why ? `transport ${this.name}: ${why}` : undefined;
  }

  async openGroup(group: GroupRun): Promise<TransportSession> {
    const { volume, snapshot } = group;
    if (!volume || !snapshot) {
      throw new StillpointError('the off-host transport was given a group without a volume snapshot', { where: `group ${group.key}` });
    }
    const provider = this.engine.snapshotProvider(volume);
    if (!provider || provider.name !== snapshot.provider) {
      throw new StillpointError(`the provider "${snapshot.provider}" that made the snapshot no longer serves volume ${volume.name}`, { where: `group ${group.key}` });
    }
    const presentations = new Map<string, Promise<PresentedSnapshot>>();
    const presentTo = (proxy: string): Promise<PresentedSnapshot> => {
      let p = presentations.get(proxy);
      if (!p) {
        p = provider.present(snapshot, proxy);
        presentations.set(proxy, p);
        p.catch(() => presentations.delete(proxy));
      }
      return p;
    };
    return {
      transfer: (run, sink) => this.#transfer(run, sink, volume, presentTo),
      close: async () => {
        const errors: string[] = [];
        for (const [proxy, p] of presentations) {
          try {
            await (await p).unpresent();
            debug('unpresented %s from proxy %s', snapshot.id, proxy);
          } catch (error) {
            errors.push(`proxy ${proxy}: ${(error as Error).message}`);
          }
        }
        presentations.clear();
        if (errors.length) throw new StillpointError(`could not unpresent snapshot ${snapshot.id}: ${errors.join('; ')}`, { where: `volume ${volume.name}` });
      },
    };
  }

  async #transfer(run: VmRun, sink: TransportSink, volume: VolumeRef, presentTo: (proxy: string) => Promise<PresentedSnapshot>): Promise<DiskResult[]> {
    const where = `VM ${run.vm.name}`;
    const remote = sink.remote;
    if (!remote) {
      throw new StillpointError('the engine gave the off-host transport no way for a proxy to reach the repository', {
        where,
        hint: 'run the job with RunJobOptions.repositoryAccess (as `stillpoint backup` does), or use mode "onHost"',
      });
    }
    const disks = disksToRead(run);
    const stored = new Map<string, DiskResult>();
    const tried = new Set<string>();
    let announced = false;
    let lastError: Error | undefined;
    for (let attempt = 0; ; attempt++) {
      let lease;
      try {
        lease = await this.pool.acquire(volume.name, tried, where);
      } catch (error) {
        if (!lastError) throw error;
        throw new StillpointError(`${lastError.message}; moving the VM to another proxy failed: ${(error as Error).message}`, { cause: lastError });
      }
      const pending: Array<Promise<void>> = [];
      try {
        const presented = await presentTo(lease.spec.name);
        const map = (d: PresentedDisk): PresentedDisk => ({ ...d, path: presented.mapPath(d.path), parentPaths: d.parentPaths.map((p) => presented.mapPath(p)) });
        if (!announced) {
          await sink.presented(disks.map(map));
          announced = true;
        }
        const todo = disks.filter((d) => !stored.has(d.diskId)).map(map);
        for (const d of todo) await remote.reading(d);
        const byId = new Map(todo.map((d) => [d.diskId, d]));
        const task = {
          id: `${run.vm.id}.${attempt}.${randomBytes(3).toString('hex')}`,
          vm: { id: run.vm.id, name: run.vm.name },
          restorePoint: { previousId: remote.previous.id, previous: remote.previous.disks },
          repository: {
            config: remote.repository.config,
            ...(remote.repository.passphrase !== undefined && privateChannel(lease.spec) ? { passphrase: remote.repository.passphrase } : {}),
          },
          disks: todo.map((d): DiskTask => {
            const c = remote.changes?.[d.diskId];
            return {
              diskId: d.diskId, path: d.path, parentPaths: d.parentPaths, virtualSize: d.virtualSize,
              ...(c ? { changed: c.changed, ...(c.changed === null && c.reason ? { fullReadReason: c.reason } : {}) } : {}),
            };
          }),
        };
        debug('VM %s: task %s on proxy %s (%d disk(s))', run.vm.name, task.id, lease.spec.name, todo.length);
        await lease.client.runTask(task, {
          signal: run.job.signal,
          onProgress: (p) => remote.progress(p),
          onDisk: (d) => {
            const disk = byId.get(d.diskId);
            if (!disk) return;
            pending.push(remote.addDisk(disk, { record: d.record, durationMs: d.durationMs }).then((r) => { stored.set(d.diskId, r); }));
          },
        });
        await Promise.all(pending);
        return disks.map((d) => {
          const r = stored.get(d.diskId);
          if (!r) throw new StillpointError(`proxy "${lease.spec.name}" said the task was done but did not report disk ${d.diskId}`, { where });
          return r;
        });
      } catch (error) {
        await Promise.allSettled(pending);
        if (isRetryable(error) && attempt < this.options.retries && !run.job.signal.aborted) {
          tried.add(lease.spec.name);
          lastError = error as Error;
          debug('VM %s moves off proxy %s: %s', run.vm.name, lease.spec.name, (error as Error).message);
          continue;
        }
        if (attempt > 0 && error instanceof Error) {
          throw new StillpointError(`${error.message} (after moving from proxy ${[...tried].join(', ')})`, { where, cause: error });
        }
        throw error;
      } finally {
        lease.release();
      }
    }
  }
}
