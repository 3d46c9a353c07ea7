import createDebug from 'debug';
import { NotFoundError, StillpointError, TransientError } from '../../core/errors.ts';
import { asArray, asObject, type Json, num, optNum, optStr } from './ps-json.ts';
import { PowerShellError, type PowerShellRunner, psString, wqlString } from './runner.ts';

const debug = createDebug('stillpoint:hyperv:wmi');

export const NAMESPACE = 'root/virtualization/v2';

/** Return values of Hyper-V WMI methods (DMTF codes and the vendor range, as documented per method). */
export const RETURN_VALUES: Readonly<Record<number, string>> = {
  0: 'Completed with No Error',
  1: 'Not Supported',
  2: 'Failed',
  3: 'Timeout',
  4: 'Invalid Parameter',
  5: 'Invalid State',
  6: 'Invalid Type',
  4096: 'Method Parameters Checked - Job Started',
  32768: 'Failed',
  32769: 'Access Denied',
  32770: 'Not Supported',
  32771: 'Status is unknown',
  32772: 'Timeout',
  32773: 'Invalid parameter',
  32774: 'System is in use',
  32775: 'Invalid state for this operation',
  32776: 'Incorrect data type',
  32777: 'System is not available',
  32778: 'Out of memory',
  32779: 'File not found',
};

/** Msvm_ConcreteJob.JobState */
export const JOB_STATES: Readonly<Record<number, string>> = {
  2: 'New', 3: 'Starting', 4: 'Running', 5: 'Suspended', 6: 'Shutting Down', 7: 'Completed',
  8: 'Terminated', 9: 'Killed', 10: 'Exception', 11: 'Service', 32768: 'Completed with warnings',
};
export const JOB_COMPLETED = 7;
export const JOB_COMPLETED_WITH_WARNINGS = 32768;
const JOB_ACTIVE = new Set([2, 3, 4, 5, 6, 11]);

export interface WmiJob {
  instanceId: string;
  state: number;
  percentComplete?: number;
  errorCode: number;
  errorDescription?: string;
  errorSummary?: string;
  caption?: string;
}

/** A Hyper-V job ended without completing (failed, killed, terminated); `code` is its ErrorCode. */
export class JobFailedError extends StillpointError {
  readonly job: WmiJob;
  readonly code: number;
  constructor(job: WmiJob, message: string, mapped: StillpointError) {
    super(message, { where: mapped.where, hint: mapped.hint });
    this.job = job;
    this.code = job.errorCode || 32768;
  }
}

/** What to say and which error class to use for a WMI code (method return value or job ErrorCode). */
export function wmiCodeMessage(code: number, operation: string, detail?: string): string {
  return `${operation} failed: ${RETURN_VALUES[code] ?? 'unknown error'} (${code})${detail ? `: ${detail}` : ''}`;
}

export function wmiCodeError(code: number, operation: string, where: string, detail?: string): StillpointError {
  const message = wmiCodeMessage(code, operation, detail);
  switch (code) {
    case 32769:
      return new StillpointError(message, {
        where,
        hint: 'Run Stillpoint as a member of the local "Hyper-V Administrators" group (or Administrators) on every host, elevated',
      });
    case 3: case 32772: case 32774: case 32777:
      return new TransientError(message, { where, hint: 'Hyper-V is busy with this VM or the host; the job retries later' });
    case 5: case 32775:
      return new StillpointError(message, {
        where,
        hint: 'The VM is in a state that does not allow this (e.g. another checkpoint, backup, migration or merge is running); wait until it is finished',
      });
    case 32779:
      return new NotFoundError(message, { where, hint: 'A file of the VM is missing; check the VM\'s disks in Hyper-V Manager' });
    case 1: case 32770:
      return new StillpointError(message, { where, hint: 'This Hyper-V host does not support the operation (Windows Server 2016 or later is needed)' });
    default:
      return new StillpointError(message, { where, hint: 'See the Hyper-V-VMMS Admin event log on the host for details' });
  }
}

/** Turn a PowerShell error record into a clear Stillpoint error (or return it unchanged). */
export function mapPowerShellError(err: unknown, operation: string, where: string): unknown {
  if (!(err instanceof PowerShellError)) return err;
  const r = err.record;
  const id = r.fullyQualifiedErrorId ?? '';
  const hr = r.hresult !== undefined ? (r.hresult >>> 0) : undefined;
  const base = `${operation} failed: ${r.message}`;
  if (/CommandNotFoundException/.test(id) || /is not recognized as (the )?name of a cmdlet/i.test(r.message)) {
    return new StillpointError(base, {
      where,
      hint: 'Install the Hyper-V PowerShell module on the host (Install-WindowsFeature Hyper-V-PowerShell; for clusters also RSAT-Clustering-PowerShell)',
    });
  }
  if (r.category === 'PermissionDenied' || hr === 0x80070005 || /access (is )?denied/i.test(r.message)) {
    return new StillpointError(base, {
      where,
      hint: 'Run Stillpoint elevated as a member of "Hyper-V Administrators" on every host; for a cluster also with cluster read access',
    });
  }
  if (r.category === 'ObjectNotFound' || /unable to find a virtual machine|was not found|cannot find/i.test(r.message)) {
    return new NotFoundError(base, { where, hint: 'The VM or checkpoint no longer exists on that host (deleted, renamed or migrated); run the inventory again' });
  }
  if (hr === 0x800706ba || hr === 0x80338126 || /RPC server is unavailable|WinRM cannot complete/i.test(r.message)) {
    return new TransientError(base, { where, hint: 'The host does not answer (RPC/WinRM); check that it is up and reachable' });
  }
  if (/Invalid namespace/i.test(r.message)) {
    return new StillpointError(base, { where, hint: 'The Hyper-V role is not installed on that host (no root\\virtualization\\v2 WMI namespace)' });
  }
  return new StillpointError(base, { where, hint: r.fullyQualifiedErrorId ? `PowerShell error id: ${r.fullyQualifiedErrorId}` : undefined, cause: err });
}

/** Run a script; PowerShell errors become clear Stillpoint errors. */
export async function runMapped(runner: PowerShellRunner, script: string, operation: string, where: string): Promise<unknown> {
  try {
    return await runner.run(script);
  } catch (err) {
    throw mapPowerShellError(err, operation, where);
  }
}

export function jobScript(host: string, instanceId: string): string {
  return [
    `Get-CimInstance -Namespace ${NAMESPACE} -ClassName Msvm_ConcreteJob -ComputerName ${psString(host)} -Filter ${psString(`InstanceID=${wqlString(instanceId)}`)} |`,
    '  Select-Object InstanceID, JobState, PercentComplete, ErrorCode, ErrorDescription, ErrorSummaryDescription, Caption',
  ].join('\n');
}

export function parseJob(value: unknown, where: string): WmiJob | undefined {
  const list = asArray(value);
  if (list.length === 0) return undefined;
  const o: Json = asObject(list[0], 'Msvm_ConcreteJob', where);
  return {
    instanceId: optStr(o, 'InstanceID') ?? '',
    state: num(o, 'JobState', where),
    percentComplete: optNum(o, 'PercentComplete'),
    errorCode: optNum(o, 'ErrorCode') ?? 0,
    errorDescription: optStr(o, 'ErrorDescription'),
    errorSummary: optStr(o, 'ErrorSummaryDescription'),
    caption: optStr(o, 'Caption'),
  };
}

export interface PollOptions {
  intervalMs: number;
  timeoutMs: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Poll a Msvm_ConcreteJob until it leaves the active states; return it when it completed
 * (7, or 32768 with warnings), throw a clear error when it failed, was killed or timed out.
 */
export async function waitForJob(
  runner: PowerShellRunner, host: string, instanceId: string, operation: string, where: string, poll: PollOptions,
): Promise<WmiJob> {
  const now = poll.now ?? Date.now;
  const wait = poll.sleep ?? sleep;
  const deadline = now() + poll.timeoutMs;
  for (;;) {
    const job = parseJob(await runMapped(runner, jobScript(host, instanceId), `${operation} (job status)`, where), where);
    if (!job) {
      throw new StillpointError(`${operation}: the Hyper-V job ${instanceId} disappeared before it finished`, {
        where, hint: 'Hyper-V removes finished jobs after a few minutes; check the Hyper-V-VMMS Admin event log for the outcome',
      });
    }
    debug('%s: job %s state %s (%s%%)', operation, instanceId, JOB_STATES[job.state] ?? job.state, job.percentComplete ?? '?');
    if (job.state === JOB_COMPLETED || job.state === JOB_COMPLETED_WITH_WARNINGS) return job;
    if (!JOB_ACTIVE.has(job.state)) {
      const detail = [job.errorSummary, job.errorDescription].filter(Boolean).join(' — ');
      const op = `${operation} (job ${JOB_STATES[job.state] ?? job.state})`;
      const mapped = wmiCodeError(job.errorCode || 32768, op, where, detail || undefined);
      if (mapped instanceof TransientError) throw mapped;
      throw new JobFailedError(job, wmiCodeMessage(job.errorCode || 32768, op, detail || undefined), mapped);
    }
    if (now() >= deadline) {
      throw new TransientError(`${operation}: Hyper-V job still ${JOB_STATES[job.state] ?? job.state} after ${poll.timeoutMs} ms`, {
        where, hint: 'The job keeps running on the host; raise the driver option checkpointTimeoutMs or check the host\'s storage',
      });
    }
    await wait(poll.intervalMs);
  }
}

/** Interpret a method result `{ ReturnValue, JobId }`: 0 = done, 4096 = wait for the job, else an error. */
export async function completeMethod(
  runner: PowerShellRunner, host: string, result: unknown, operation: string, where: string, poll: PollOptions,
): Promise<WmiJob | undefined> {
  const o = asObject(result, `${operation} result`, where);
  const rv = num(o, 'ReturnValue', where);
  if (rv === 0) return undefined;
  if (rv === 4096) {
    const jobId = optStr(o, 'JobId');
    if (!jobId) throw new StillpointError(`${operation}: Hyper-V started a job but returned no job reference`, { where });
    return waitForJob(runner, host, jobId, operation, where, poll);
  }
  throw wmiCodeError(rv, operation, where);
}
