import type { CliCommand } from '../command.ts';

/** Every CLI command, one module each. Add yours with one import and one entry. */
export const commands: CliCommand[] = [
];
