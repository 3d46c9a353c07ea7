import type { CliCommand } from '../command.ts';
import { proxyCommand } from './proxy.ts';
import { labInitCommand } from './lab-init.ts';

/** Every CLI command, one module each. Add yours with one import and one entry. */
export const commands: CliCommand[] = [
  proxyCommand,
  labInitCommand,
];
