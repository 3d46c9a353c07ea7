#!/usr/bin/env node
// The `stillpoint` executable: registers the TypeScript loader (tsx) and runs the CLI.
import { register } from 'tsx/esm/api';
register();
// A reader of standard output that stops reading (`stillpoint backup | head`) must not stop a
// job halfway: what is left to print is dropped and the command finishes (a restore to standard
// output sees the same error through its own listener and stops there).
process.stdout.on('error', (error) => {
  if (error.code !== 'EPIPE') throw error;
});
const { main } = await import('./main.ts');
process.exitCode = await main(process.argv.slice(2));
