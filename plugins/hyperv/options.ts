import { z } from 'zod';

/** Options of a `drivers[]` entry with `type: 'hyperv'` (see README.md for what each does). */
export const hypervDriverOptionsSchema = z.object({
  /** Hyper-V hosts to manage (names as PowerShell's -ComputerName takes them). Default: the host
   *  Stillpoint runs on, or every node when it runs on a failover-cluster node. */
  hosts: z.array(z.string().min(1)).min(1).optional(),
  powershell: z.object({
    /** `auto` (powershell.exe on Windows), `powershell` (Windows PowerShell 5.1), `pwsh` (PowerShell 7), or a full path. */
    executable: z.string().min(1).default('auto'),
    /** Time limit for one script (ms); 0 = none. */
    invocationTimeoutMs: z.number().int().nonnegative().default(10 * 60_000),
  }).strict().default({ executable: 'auto', invocationTimeoutMs: 10 * 60_000 }),
  /** `recovery`: a recovery (backup) checkpoint through WMI (needed for RCT reference points);
   *  `checkpoint-vm`: Checkpoint-VM with CheckpointType ProductionOnly/Production/Standard. */
  checkpointMethod: z.enum(['recovery', 'checkpoint-vm']).default('recovery'),
  /** How often to poll a Hyper-V job or a running merge (ms). */
  pollIntervalMs: z.number().int().nonnegative().default(1000),
  /** How long a checkpoint (or reference point) job may take (ms). */
  checkpointTimeoutMs: z.number().int().positive().default(30 * 60_000),
  /** How long a merge may take before Stillpoint reports it as still running (ms). */
  mergeTimeoutMs: z.number().int().positive().default(4 * 60 * 60_000),
  /** Guest OS per VM name or id, for guests that do not report it through KVP. */
  guestOs: z.record(z.string(), z.enum(['windows', 'linux'])).default({}),
}).strict();

export type HypervDriverOptions = z.output<typeof hypervDriverOptionsSchema>;
