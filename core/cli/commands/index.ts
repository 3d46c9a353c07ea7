import type { CliCommand } from '../command.ts';
import { proxyCommand } from './proxy.ts';
import { labInitCommand } from './lab-init.ts';
import { backupCommand } from './backup.ts';
import { checkCommand } from './check.ts';
import { listCommand } from './list.ts';
import { restoreCommand } from './restore.ts';
import { verifyCommand } from './verify.ts';
import { pruneCommand } from './prune.ts';
import { cleanupCommand } from './cleanup.ts';
import { pluginsCommand } from './plugins.ts';
import { initCommand } from './init.ts';
import { vhdxInfoCommand } from './vhdx-info.ts';
import { vhdxExportCommand } from './vhdx-export.ts';

/** Every CLI command, one module each. Add yours with one import and one entry. */
export const commands: CliCommand[] = [
  proxyCommand,
  labInitCommand,
  backupCommand,
  checkCommand,
  listCommand,
  restoreCommand,
  verifyCommand,
  pruneCommand,
  cleanupCommand,
  pluginsCommand,
  initCommand,
  vhdxInfoCommand,
  vhdxExportCommand,
];
