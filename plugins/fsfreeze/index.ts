/**
 * fsfreeze: guest quiescing for Linux.
 *
 * Taps `resolveQuiescer` for the Linux VMs listed in its options (by name or id), each reached
 * through a channel: `local` (the machine Stillpoint runs on), `ssh` (an agentless guest) or
 * `qga` (a KVM guest's QEMU guest agent socket). See README.md.
 */
import { definePlugin } from '../../core/plugin.ts';
import { optionsSchema } from './options.ts';
import { FsfreezeQuiescer } from './quiescer.ts';

export { optionsSchema } from './options.ts';
export type { FsfreezeOptions, GuestOptions } from './options.ts';
export { FsfreezeQuiescer, FreezeFailedError } from './quiescer.ts';
export { SshHostKeyError } from './ssh.ts';

export default definePlugin('fsfreeze', optionsSchema, (options, context) => {
  const quiescer = new FsfreezeQuiescer(options, context);
  return {
    name: 'fsfreeze',
    apply(engine) {
      engine.hooks.resolveQuiescer.tap('fsfreeze', (vm) => (quiescer.serves(vm) ? quiescer : undefined));
    },
  };
});
