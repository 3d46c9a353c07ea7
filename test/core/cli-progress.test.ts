import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { main } from '../../core/cli/main.ts';
import { writeHost } from '../fixtures/plugins/filehost/index.ts';
import { tempDir } from './helpers.ts';

class Capture extends Writable {
  text = '';
  isTTY: boolean;
  constructor(tty: boolean) { super(); this.isTTY = tty; }
  override _write(chunk: Buffer, _enc: string, cb: () => void) { this.text += chunk.toString(); cb(); }
}

test('on a terminal, disk progress is redrawn in place with bytes, rate and ETA', async (t) => {
  const dir = tempDir(t);
  writeHost(join(dir, 'host'), [{ name: 'a' }], { size: 8 * 1024 * 1024 });
  writeFileSync(join(dir, 'stillpoint.config.json'), JSON.stringify({
    plugins: [{ use: fileURLToPath(new URL('../fixtures/plugins/filehost/index.ts', import.meta.url)), options: { dir: './host' } }],
    drivers: [{ name: 'lab', type: 'filehost' }],
    repository: { storage: { type: 'local', options: { path: './repo' } } },
    jobs: [{ name: 'nightly', mode: 'onHost' }],
  }));
  const stdout = new Capture(true);
  const stderr = new Capture(false);
  const code = await main(['backup'], { stdout, stderr, cwd: dir, env: { ...process.env } });
  t.is(code, 0, stderr.text);
  t.regex(stdout.text, /\r\x1b\[2Ka scsi0: 100% read 4\.0 MiB of 4\.0 MiB, stored [\d.]+ \w+, [\d.]+ \w+\/s/);
  t.regex(stdout.text, /^a +online +production checkpoint.* ok \S+$/m);
});
