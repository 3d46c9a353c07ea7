import { z } from 'zod';

/** One proxy of the config: how to reach it, the volumes it sees, and how many VMs it reads at once. */
export const proxySpecSchema = z.object({
  /** Name used in logs, errors and for snapshot presentation (a provider may map paths per proxy). */
  name: z.string().min(1),
  /** Start the proxy and speak over its stdio, e.g. ["ssh", "proxy1", "stillpoint", "proxy"]. */
  command: z.array(z.string().min(1)).min(1).optional(),
  /** Or connect to a proxy listening on a unix socket (`stillpoint proxy --listen unix:PATH`). */
  socket: z.string().min(1).optional(),
  /** Or connect to a proxy listening on TCP (`stillpoint proxy --listen tcp:HOST:PORT --token-file F`). */
  host: z.string().min(1).optional(),
  port: z.number().int().min(1).max(65535).optional(),
  /** File holding the proxy's token (needed for a TCP proxy that is not on loopback). */
  tokenFile: z.string().min(1).optional(),
  /**
   * The volumes whose snapshots this proxy can read, as the driver names them (the lab and Hyper-V
   * name a volume by its path): names or glob patterns, e.g. "/srv/vm-*" or "C:\\ClusterStorage\\Volume?"; "*" for every volume.
   */
  volumes: z.array(z.string().min(1)).min(1).default(['*']),
  /** VMs this proxy reads at once. */
  concurrency: z.number().int().min(1).max(256).default(2),
}).strict().superRefine((spec, ctx) => {
  const ways = [spec.command ? 'command' : null, spec.socket ? 'socket' : null, spec.host || spec.port ? 'host/port' : null].filter(Boolean);
  if (ways.length > 1) ctx.addIssue({ code: 'custom', message: `give one way to reach the proxy, not ${ways.join(' and ')}` });
  if ((spec.host === undefined) !== (spec.port === undefined)) ctx.addIssue({ code: 'custom', message: 'host and port go together' });
});

export const offHostOptionsSchema = z.object({
  /**
   * The proxies. Default: one proxy named "local" that this process starts on this machine
   * (`stillpoint proxy` over stdio) and that sees every volume.
   */
  proxies: z.array(proxySpecSchema).optional(),
  /** How often the coordinator pings a proxy, and after how long without an answer it is declared lost. */
  heartbeatMs: z.number().int().min(10).default(5000),
  deadAfterMs: z.number().int().min(50).default(30000),
  /** How many times a VM moves to another proxy after its proxy was lost (or failed transiently). */
  retries: z.number().int().min(0).max(16).default(1),
}).strict().superRefine((options, ctx) => {
  const seen = new Set<string>();
  for (const [i, p] of (options.proxies ?? []).entries()) {
    if (seen.has(p.name)) ctx.addIssue({ code: 'custom', path: ['proxies', i, 'name'], message: `proxy "${p.name}" is listed twice` });
    seen.add(p.name);
  }
});

export type ProxySpec = z.output<typeof proxySpecSchema>;
export type OffHostOptions = z.output<typeof offHostOptionsSchema>;
