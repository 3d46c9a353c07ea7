/**
 * Options of the fsfreeze plugin: which Linux guests it quiesces, how it reaches each one, what it
 * freezes there, and for how long at most.
 *
 * Secrets never appear in the config: SSH keys come from a file (`keyFile`) or an environment
 * variable (`keyEnv`), passphrases likewise.
 */
import { z } from 'zod';

/** Default longest freeze when neither the guest nor the plugin sets `deadlineMs`. */
export const DEFAULT_DEADLINE_MS = 10_000;

const scriptSchema = z
  .object({
    /** A shell command line, run with `sh -c` on the guest. */
    command: z.string().min(1),
    /** How long the script may run (default 60 s); a script that overruns counts as failed. */
    timeoutMs: z.number().int().positive().max(3_600_000).default(60_000),
  })
  .strict();

const localChannel = z.object({ type: z.literal('local') }).strict();

const sshChannel = z
  .object({
    type: z.literal('ssh'),
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(22),
    user: z.string().min(1),
    /** Private key file (relative paths resolve against the config file's directory). */
    keyFile: z.string().min(1).optional(),
    /** Name of an environment variable that holds the private key (PEM / OpenSSH format). */
    keyEnv: z.string().min(1).optional(),
    passphraseFile: z.string().min(1).optional(),
    passphraseEnv: z.string().min(1).optional(),
    /** OpenSSH known_hosts file that must list the guest's host key. */
    knownHostsFile: z.string().min(1).optional(),
    /** The guest's host key fingerprint as `ssh-keygen -lf` prints it: `SHA256:<43 base64 characters>`. */
    fingerprint: z
      .string()
      .regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'expected SHA256:<43 base64 characters>, as printed by ssh-keygen -lf')
      .optional(),
    /** Run fsfreeze and the scripts through `sudo -n` (for a user other than root). */
    sudo: z.boolean().default(false),
    connectTimeoutMs: z.number().int().positive().default(15_000),
  })
  .strict()
  .superRefine((channel, ctx) => {
    if (!channel.keyFile === !channel.keyEnv) {
      ctx.addIssue({ code: 'custom', path: ['keyFile'], message: 'set exactly one of keyFile or keyEnv (the private key is never written into the config)' });
    }
    if (channel.passphraseFile && channel.passphraseEnv) {
      ctx.addIssue({ code: 'custom', path: ['passphraseFile'], message: 'set at most one of passphraseFile or passphraseEnv' });
    }
    if (!channel.knownHostsFile && !channel.fingerprint) {
      ctx.addIssue({ code: 'custom', path: ['knownHostsFile'], message: "set knownHostsFile or fingerprint: the guest's host key is always checked" });
    }
  });

const qgaChannel = z
  .object({
    type: z.literal('qga'),
    /** The guest agent's unix socket (the host side of the virtio-serial channel, or qemu-ga -m unix-listen). */
    socket: z.string().min(1),
    /** Per-request timeout for the guest agent (default 10 s). */
    requestTimeoutMs: z.number().int().positive().default(10_000),
  })
  .strict();

export const channelSchema = z.discriminatedUnion('type', [localChannel, sshChannel, qgaChannel]);

export const guestSchema = z
  .object({
    channel: channelSchema,
    /** The mount points to freeze (each must be a mount point). */
    mountPoints: z.array(z.string().startsWith('/', 'must be an absolute path')).min(1).optional(),
    /** Freeze what hv_vss_daemon freezes: every writable block-device filesystem, root last. Needs a deadline. */
    freezeAll: z.boolean().default(false),
    /** Longest freeze for this guest (overrides the plugin's `deadlineMs`). */
    deadlineMs: z.number().int().positive().max(600_000).optional(),
    preFreeze: scriptSchema.optional(),
    postThaw: scriptSchema.optional(),
  })
  .strict()
  .superRefine((guest, ctx) => {
    if (guest.freezeAll && guest.mountPoints) {
      ctx.addIssue({ code: 'custom', path: ['mountPoints'], message: 'set either mountPoints or freezeAll, not both' });
    }
    if (!guest.freezeAll && !guest.mountPoints) {
      ctx.addIssue({
        code: 'custom',
        path: ['mountPoints'],
        message: 'say what to freeze: mountPoints: ["/data", ...], or freezeAll: true with deadlineMs',
      });
    }
  });

export const optionsSchema = z
  .object({
    /** Longest freeze, in ms, for guests that do not set their own (default 10 s). */
    deadlineMs: z.number().int().positive().max(600_000).optional(),
    /** Guests by VM name or VM id. */
    guests: z.record(z.string().min(1), guestSchema).default({}),
    /**
     * Also answer `readiness` for Linux VMs not listed in `guests` whose driver reports the
     * Hyper-V VSS daemon (`integration.vssDaemon`): those are quiesced by the host itself.
     */
    readinessFromIntegration: z.boolean().default(true),
  })
  .strict()
  .superRefine((options, ctx) => {
    for (const [name, guest] of Object.entries(options.guests)) {
      if (guest.freezeAll && guest.deadlineMs === undefined && options.deadlineMs === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['guests', name, 'deadlineMs'],
          message: 'freezeAll freezes every writable filesystem of the guest (root included); it is refused without an explicit deadlineMs',
        });
      }
    }
  });

export type FsfreezeOptions = z.output<typeof optionsSchema>;
export type GuestOptions = z.output<typeof guestSchema>;
export type ChannelOptions = z.output<typeof channelSchema>;
export type SshChannelOptions = Extract<ChannelOptions, { type: 'ssh' }>;
export type QgaChannelOptions = Extract<ChannelOptions, { type: 'qga' }>;
export type ScriptOptions = z.output<typeof scriptSchema>;
