import { commands } from './commands/index.ts';
import { EXIT, type CliIo } from './command.ts';

/** Dispatches `stillpoint <command> [args]` (longest matching command name wins). */
export async function main(argv: string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr, cwd: process.cwd(), env: process.env }): Promise<number> {
  const sorted = [...commands].sort((a, b) => b.name.split(' ').length - a.name.split(' ').length);
  for (const command of sorted) {
    const words = command.name.split(' ');
    if (words.every((w, i) => argv[i] === w)) return command.run(argv.slice(words.length), io);
  }
  const help = ['Usage: stillpoint <command> [options]', '', 'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(16)} ${c.summary}`)].join('\n');
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === 'help') { io.stdout.write(help + '\n'); return EXIT.ok; }
  io.stderr.write(`stillpoint: unknown command "${argv.join(' ')}"\n\n${help}\n`);
  return EXIT.usage;
}
