/**
 * The host's handle on one running guest: starts the workload process (workload.ts) and speaks
 * its protocol (protocol.ts). One guest per running lab VM, alive while the lab driver is open.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import createDebug from 'debug';
import { StillpointError, TransientError } from '../../../core/errors.ts';
import type { GuestMessage, HostMessage, WorkloadDisk, WorkloadSettings } from './protocol.ts';

const debug = createDebug('stillpoint:lab:guest');
const workloadPath = fileURLToPath(new URL('./workload.ts', import.meta.url));
const tsxLoader = import.meta.resolve('tsx');

export interface HoldResult {
  lastTransaction: Record<string, number>;
  midTransaction: boolean;
}

export class GuestProcess {
  readonly vmName: string;
  readonly #child: ChildProcess;
  #nextId = 1;
  readonly #waiters = new Map<number, { resolve(m: GuestMessage): void; reject(e: Error): void }>();
  #ready: Promise<Record<string, number>>;
  #exited: Promise<void>;
  #failure: string | undefined;
  #alive = true;

  private constructor(vmName: string, vmId: string, disks: WorkloadDisk[], settings: WorkloadSettings) {
    this.vmName = vmName;
    this.#child = fork(workloadPath, [], {
      execArgv: [`--import=${tsxLoader}`],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'json',
    });
    this.#exited = new Promise((resolve) => this.#child.once('exit', (code, signal) => {
      this.#alive = false;
      debug('guest of %s exited (%s)', vmName, code ?? signal);
      const error = new StillpointError(`the guest workload of VM ${vmName} exited${this.#failure ? `: ${this.#failure}` : ''}`, { where: `lab VM ${vmName}` });
      for (const w of this.#waiters.values()) w.reject(error);
      this.#waiters.clear();
      resolve();
    }));
    this.#ready = new Promise((resolve, reject) => {
      this.#child.on('message', (message: GuestMessage) => {
        if (message.type === 'ready') return resolve(message.lastTransaction);
        if (message.type === 'error' && message.id === undefined) {
          this.#failure = message.message;
          return reject(new StillpointError(message.message, { where: `lab VM ${vmName}` }));
        }
        const id = 'id' in message ? message.id : undefined;
        const waiter = id !== undefined ? this.#waiters.get(id) : undefined;
        if (!waiter) return;
        this.#waiters.delete(id!);
        if (message.type === 'error') waiter.reject(new StillpointError(message.message, { where: `lab VM ${vmName}` }));
        else waiter.resolve(message);
      });
      this.#child.once('exit', () => reject(new StillpointError(`the guest workload of VM ${vmName} exited before it was ready${this.#failure ? `: ${this.#failure}` : ''}`, { where: `lab VM ${vmName}` })));
    });
    this.#send({ type: 'init', vmId, disks, settings });
  }

  /** Start the guest and wait until it writes. Resolves with the last transaction per disk. */
  static async start(vmName: string, vmId: string, disks: WorkloadDisk[], settings: WorkloadSettings): Promise<GuestProcess> {
    const guest = new GuestProcess(vmName, vmId, disks, settings);
    await guest.#ready;
    return guest;
  }

  get pid(): number | undefined { return this.#child.pid; }
  get alive(): boolean { return this.#alive; }

  #send(message: HostMessage): void {
    if (this.#alive && this.#child.connected) this.#child.send(message);
  }

  #ask(message: HostMessage & { id: number }, timeoutMs?: number): Promise<GuestMessage> {
    if (!this.#alive) return Promise.reject(new StillpointError(`the guest workload of VM ${this.vmName} is not running`, { where: `lab VM ${this.vmName}` }));
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      this.#waiters.set(message.id, {
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.#waiters.delete(message.id);
          this.#send({ type: 'cancel', id: message.id });
          reject(new TransientError(`the guest of VM ${this.vmName} did not reach a consistent point within ${timeoutMs} ms`, {
            where: `lab VM ${this.vmName}`,
            hint: 'a guest application (VSS writer / fsfreeze hook) did not answer in time; retry, or raise the lab option quiesceDeadlineMs',
          }));
        }, timeoutMs);
      }
      this.#send(message);
    });
  }

  /**
   * Stop writing and close the disk files. `boundary`: at a transaction boundary (a freeze; bounded by
   * `timeoutMs`); `now`: between two page writes, wherever the guest is.
   */
  async hold(mode: 'boundary' | 'now', options: { timeoutMs?: number; hang?: boolean } = {}): Promise<HoldResult & { id: number }> {
    const id = this.#nextId++;
    const answer = await this.#ask({ type: 'hold', id, mode, hang: options.hang }, options.timeoutMs);
    if (answer.type !== 'held') throw new StillpointError(`unexpected answer "${answer.type}" from the guest of VM ${this.vmName}`);
    return { id, lastTransaction: answer.lastTransaction, midTransaction: answer.midTransaction };
  }

  /** Reopen the disks (on new tops, by disk id) and go on writing. Resolves false when the freeze had already ended by itself. */
  async resume(holdId: number, paths: Record<string, string> = {}): Promise<boolean> {
    const answer = await this.#ask({ type: 'resume', id: holdId, paths });
    if (answer.type !== 'resumed') throw new StillpointError(`unexpected answer "${answer.type}" from the guest of VM ${this.vmName}`);
    return !answer.thawedEarly;
  }

  /** Finish the transaction in flight, close the disks and exit. */
  async stop(timeoutMs = 15_000): Promise<void> {
    if (!this.#alive) return;
    const id = this.#nextId++;
    this.#send({ type: 'stop', id });
    const timer = setTimeout(() => { debug('guest of %s did not stop in time; killing it', this.vmName); this.#child.kill('SIGKILL'); }, timeoutMs);
    await this.#exited;
    clearTimeout(timer);
  }
}
