/**
 * `stillpoint restore` and `stillpoint verify` end to end, as a user runs them: a demo lab
 * (`stillpoint lab init`) backed up with `stillpoint backup`, then restores to raw, to VHDX, into a
 * folder and byte ranges to stdout; a damaged chunk found by verify and named by restore.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { tempDir } from '../core/helpers.ts';
import { CLI, stillpoint } from './run-cli.ts';

interface BinRun { code: number | null; stdout: Buffer; stderr: string }

/** Like `stillpoint()` but keeps stdout as bytes (for a disk or range written to stdout). */
function stillpointBin(args: string[], cwd: string): Promise<BinRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, DEBUG: '', FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
  });
}

interface Point { id: string; vm: { name: string }; disks: Array<{ id: string; virtualSize: number }> }

/** `lab init` + `backup` in a fresh directory; the restore points by VM name. */
async function backedUpLab(t: ExecutionContext, dir = tempDir(t, 'stillpoint-restore-e2e-')): Promise<{ dir: string; config: string; points: Map<string, Point> }> {
  const init = await stillpoint(['lab', 'init', 'demo'], { cwd: dir });
  t.is(init.code, 0, init.stderr);
  const config = join('demo', 'stillpoint.config.json');
  const backup = await stillpoint(['backup', '--config', config], { cwd: dir });
  t.is(backup.code, 0, backup.stdout + backup.stderr);
  const list = await stillpoint(['list', '--config', config, '--json'], { cwd: dir });
  t.is(list.code, 0, list.stderr);
  const points = new Map((JSON.parse(list.stdout) as Point[]).map((p) => [p.vm.name, p]));
  return { dir, config, points };
}

let sharedDir: string | undefined;
let shared: Promise<{ dir: string; config: string; points: Map<string, Point> }> | undefined;
/** One backed-up lab for the tests that only read from it (removed after the last test). */
function lab(t: ExecutionContext) {
  shared ??= backedUpLab(t, (sharedDir = mkdtempSync(join(tmpdir(), 'stillpoint-restore-e2e-'))));
  return shared;
}
test.after.always(() => {
  if (sharedDir) rmSync(sharedDir, { recursive: true, force: true });
});

/** Which pieces of `a` and `b` differ (first offset), or -1. */
function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

function nonZeroBytes(b: Buffer): number {
  let n = 0;
  for (let i = 0; i < b.length; i += 512) if (b[i] !== 0 || b.readBigUInt64LE(i + 8) !== 0n) n++;
  return n;
}

test('a disk restores to raw and to a dynamic VHDX with the same content', async (t) => {
  const { dir, config, points } = await lab(t);
  const p = points.get('linux-db')!;
  const disk = p.disks[0];
  const raw = await stillpoint(['restore', p.id, '--config', config, '--disk', disk.id, '-o', 'db.img'], { cwd: dir });
  t.is(raw.code, 0, raw.stderr);
  t.regex(raw.stdout, new RegExp(`^restored disk ${disk.id} to ${dir}/db\\.img: 64\\.0 MiB in `, 'm'));
  const vhdx = await stillpoint(['restore', p.id, '--config', config, '--disk', disk.id, '-o', 'db.vhdx'], { cwd: dir });
  t.is(vhdx.code, 0, vhdx.stderr);
  t.regex(vhdx.stdout, /^DISK +FORMAT +SIZE +DURATION +RATE +FILE$/m);
  t.regex(vhdx.stdout, new RegExp(`^${disk.id} +vhdx +64\\.0 MiB .*db\\.vhdx$`, 'm'));
  // The VHDX is read back by the VHDX library through `stillpoint vhdx export`.
  const info = await stillpoint(['vhdx', 'info', 'db.vhdx'], { cwd: dir });
  t.is(info.code, 0, info.stderr);
  t.regex(info.stdout, /dynamic/i);
  const exported = await stillpoint(['vhdx', 'export', 'db.vhdx', '-o', 'db-from-vhdx.img'], { cwd: dir });
  t.is(exported.code, 0, exported.stderr);
  const a = readFileSync(join(dir, 'db.img'));
  const b = readFileSync(join(dir, 'db-from-vhdx.img'));
  t.is(a.length, disk.virtualSize);
  t.true(nonZeroBytes(a) > 100, 'the restored disk holds data');
  t.is(firstDifference(a, b), -1, 'raw restore and VHDX restore hold the same bytes');
  // A dynamic VHDX stores only what holds data.
  t.true(statSync(join(dir, 'db.vhdx')).size < disk.virtualSize);
  // An existing file is refused unless --overwrite.
  const again = await stillpoint(['restore', p.id, '--config', config, '--disk', disk.id, '-o', 'db.img'], { cwd: dir });
  t.is(again.code, 1);
  t.regex(again.stderr, /db\.img: the target file exists\. choose another path or pass --overwrite/);
  t.is((await stillpoint(['restore', p.id, '--config', config, '-o', 'db.img', '--overwrite'], { cwd: dir })).code, 0, 'the only disk needs no --disk');
});

test('every disk of a VM restores into a folder, with plain progress lines when stdout is not a terminal', async (t) => {
  const { dir, config, points } = await lab(t);
  const p = points.get('win-app')!;
  t.is(p.disks.length, 2);
  const r = await stillpoint(['restore', 'latest', '--vm', 'win-app', '--config', config, '--to', 'win'], { cwd: dir });
  t.is(r.code, 0, r.stderr);
  const files = readdirSync(join(dir, 'win')).sort();
  t.deepEqual(files, ['SCSI_0_0.img', 'SCSI_0_1.img']);
  for (const d of p.disks) {
    const file = `${d.id.replace(/[^A-Za-z0-9._-]+/g, '_')}.img`;
    t.is(statSync(join(dir, 'win', file)).size, d.virtualSize);
    // Progress per disk: a start line and a done line with size, duration and rate.
    t.regex(r.stdout, new RegExp(`^win-app ${p.id}: restoring disk ${d.id} \\([\\d.]+ MiB\\) to .*win/${file}$`, 'm'));
    t.regex(r.stdout, new RegExp(`^restored disk ${d.id} to .*win/${file}: [\\d.]+ MiB in [\\d.]+ m?s \\([\\d.]+ \\w+/s\\)$`, 'm'));
    // The same bytes as that disk restored on its own.
    const one = await stillpoint(['restore', p.id, '--config', config, '--disk', d.id, '-o', `one-${file}`], { cwd: dir });
    t.is(one.code, 0, one.stderr);
    t.is(firstDifference(readFileSync(join(dir, 'win', file)), readFileSync(join(dir, `one-${file}`))), -1);
  }
  t.regex(r.stdout, new RegExp(`^restore point ${p.id} \\(VM win-app, \\S+\\): 2 disk\\(s\\), 192 MiB in `, 'm'));
  t.notRegex(r.stdout, /\r|\x1b\[/, 'no terminal redraws when stdout is not a terminal');

  // --json: the result for machines, and nothing else on stdout.
  const j = await stillpoint(['restore', p.id, '--config', config, '--to', 'win-json', '--format', 'vhdx', '--json'], { cwd: dir });
  t.is(j.code, 0, j.stderr);
  const result = JSON.parse(j.stdout) as { restorePoint: string; disks: Array<{ disk: string; path: string; format: string; bytes: number }> };
  t.is(result.restorePoint, p.id);
  t.deepEqual(result.disks.map((d) => [d.disk, d.format, d.bytes]), p.disks.map((d) => [d.id, 'vhdx', d.virtualSize]));
  t.deepEqual(readdirSync(join(dir, 'win-json')).sort(), ['SCSI_0_0.vhdx', 'SCSI_0_1.vhdx']);
});

test('on a terminal, each disk\'s progress is redrawn in place with bytes, rate and ETA', async (t) => {
  // `script` (util-linux) runs the CLI on a pseudo-terminal, as in an interactive shell.
  const script = spawnSync('script', ['--version']);
  if (script.error) {
    if (process.env.CI === 'true') t.fail('`script` (util-linux) is missing: run scripts/install-system-deps.sh');
    else { t.log('skipped: `script` (util-linux) is not installed'); t.pass(); }
    return;
  }
  const { dir, config, points } = await lab(t);
  const p = points.get('win-app')!;
  const cmd = [process.execPath, CLI, 'restore', p.id, '--config', config, '--to', 'tty'].map((a) => `'${a}'`).join(' ');
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd: dir, env: { ...process.env, DEBUG: '' }, encoding: 'utf8' });
  t.is(r.status, 0, r.stdout + r.stderr);
  for (const d of p.disks) {
    t.regex(r.stdout, new RegExp(`\\r\\x1b\\[2Kwin-app ${p.id} ${d.id}: \\d+% restored [\\d.]+ \\w+ of [\\d.]+ MiB, [\\d.]+ \\w+/s ETA \\d`));
    t.regex(r.stdout, new RegExp(`\\r\\x1b\\[2Kwin-app ${p.id} ${d.id}: 100% restored ([\\d.]+ MiB) of \\1, [\\d.]+ \\w+/s\\r?\\n`));
  }
  t.regex(r.stdout, /^DISK +FORMAT +SIZE +DURATION +RATE +FILE\r?$/m);
});

test('a byte range to stdout is exactly those bytes of the raw restore, and nothing else is on stdout', async (t) => {
  const { dir, config, points } = await lab(t);
  const p = points.get('win-app')!;
  const d = p.disks[0];
  const full = await stillpoint(['restore', p.id, '--config', config, '--disk', d.id, '-o', 'range-full.img'], { cwd: dir });
  t.is(full.code, 0, full.stderr);
  const image = await readFile(join(dir, 'range-full.img'));
  const M = 1024 * 1024;
  const cases: Array<[string, number, number]> = [
    ['1M:0x10000', M, 0x10000],
    ['0x200000:64K', 0x200000, 64 * 1024],
    [`${4 * M - 100}:300`, 4 * M - 100, 300], // across a chunk boundary, unaligned
    ['3:1', 3, 1],
    [`${d.virtualSize - 5000}:`, d.virtualSize - 5000, 5000], // to the end of the disk
  ];
  let sawData = false;
  for (const [range, offset, length] of cases) {
    const r = await stillpointBin(['restore', p.id, '--config', config, '--disk', d.id, '--range', range, '-o', '-'], dir);
    t.is(r.code, 0, `${range}: ${r.stderr}`);
    t.is(r.stdout.length, length, range);
    t.is(firstDifference(r.stdout, image.subarray(offset, offset + length)), -1, range);
    if (nonZeroBytes(Buffer.concat([r.stdout, Buffer.alloc(16)])) > 0) sawData = true;
    // Progress goes to stderr when stdout carries the data.
    t.regex(r.stderr, new RegExp(`^restored disk ${d.id} to standard output: `, 'm'), range);
  }
  t.true(sawData, 'some range holds non-zero bytes');
  // --range defaults to stdout; a whole disk goes to stdout with -o -.
  const dflt = await stillpointBin(['restore', p.id, '--config', config, '--disk', d.id, '--range', '1M:4K'], dir);
  t.is(firstDifference(dflt.stdout, image.subarray(M, M + 4096)), -1);
  const whole = await stillpointBin(['restore', p.id, '--config', config, '--disk', 'SCSI 0:1', '-o', '-'], dir);
  t.is(whole.code, 0, whole.stderr);
  const second = await stillpoint(['restore', p.id, '--config', config, '--disk', 'SCSI 0:1', '-o', 'range-second.img'], { cwd: dir });
  t.is(second.code, 0, second.stderr);
  t.is(firstDifference(whole.stdout, readFileSync(join(dir, 'range-second.img'))), -1);
});

test('restore usage mistakes exit 2 and say what to do', async (t) => {
  const { dir, config, points } = await lab(t);
  const p = points.get('win-app')!;
  const run = (...args: string[]) => stillpoint(['restore', ...args, '--config', config], { cwd: dir });
  const cases: Array<[string[], RegExp]> = [
    [[p.id, '--range', '1M', '-o', '-'], /--range must be OFFSET:LENGTH \(e\.g\. 1M:4096 or 0x200000:64K\), got "1M"/],
    [[p.id, '--range', '1Q:4', '-o', '-'], /--range OFFSET must be a byte count like 4096, 0x200000, 512K or 1M, got "1Q"/],
    [[p.id, '--disk', 'SCSI 0:0', '--range', '127M:2M', '-o', '-'], /--range 133169152:2097152 \(bytes 133169152\.\.135266304\) is outside disk "SCSI 0:0" of restore point \S+, which has 134217728 bytes/],
    [[p.id, '--range', '0:1', '-o', '-'], /has 2 disks \("SCSI 0:0", "SCSI 0:1"\): name one with --disk/],
    [[p.id, '--disk', 'IDE 9', '-o', 'x.img'], /has no disk "IDE 9"; its disks are "SCSI 0:0", "SCSI 0:1"/],
    [[p.id, '--disk', 'SCSI 0:0', '--range', '0:1', '--format', 'vhdx'], /a byte range is raw data; --format vhdx needs -o FILE or --to DIR/],
    [[p.id, '--disk', 'SCSI 0:0', '-o', '-', '--json'], /--json cannot be used with -o -/],
    [[p.id], /say where to restore: --to DIR, or -o FILE \(-o - for stdout\)/],
    [[p.id, '--to', 'a', '-o', 'b'], /give either --to DIR or -o FILE, not both/],
    [[p.id, '--to', 'a', '--format', 'qcow2'], /--format must be raw or vhdx, got "qcow2"/],
  ];
  for (const [args, message] of cases) {
    const r = await run(...args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    t.regex(r.stderr, message);
    t.is(r.stdout, '');
  }
  const unknown = await run('nope', '--to', 'x');
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /there is no restore point nope\. list them with `stillpoint list`/);
});

/** Objects the local storage target holds, largest first: chunk data is what is big (whatever its layout). */
function storedObjects(root: string): Array<{ path: string; size: number }> {
  const out: Array<{ path: string; size: number }> = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push({ path: p, size: statSync(p).size });
    }
  };
  walk(root);
  return out.sort((a, b) => b.size - a.size);
}

interface VerifyJson {
  mode: string;
  ok: boolean;
  damaged: Array<{ id: string; vm: string; problems: Array<{ disk?: string; chunk?: string; offset?: number; problem: string }> }>;
  damagedChunks: Array<{ chunk: string; problem: string }>;
}

test('a damaged chunk: verify --deep names the restore point and chunk and exits 1; restore names the chunk', async (t) => {
  const { dir, config, points } = await backedUpLab(t);
  const ok = await stillpoint(['verify', '--deep', '--config', config], { cwd: dir });
  t.is(ok.code, 0, ok.stdout + ok.stderr);
  t.regex(ok.stdout, /^verify \(deep\): 5 restore point\(s\), (\d+) of \1 chunk\(s\) checked: ok$/m);

  // Flip bytes in the middle of the largest object the storage target holds (chunk data).
  const repoDir = join(dir, 'demo', 'repository');
  const [victim] = storedObjects(repoDir);
  t.true(victim.size > 4096, `largest stored object ${victim.path} is chunk data`);
  const fh = await open(victim.path, 'r+');
  const at = Math.floor(victim.size / 2);
  const bytes = Buffer.alloc(16);
  await fh.read(bytes, 0, 16, at);
  for (let i = 0; i < bytes.length; i++) bytes[i] ^= 0xa5;
  await fh.write(bytes, 0, 16, at);
  await fh.close();

  // Quick verification only checks existence: the chunk is still there.
  const quick = await stillpoint(['verify', '--config', config], { cwd: dir });
  t.is(quick.code, 0, quick.stdout + quick.stderr);
  t.regex(quick.stdout, /^verify \(quick\): .*: ok$/m);

  const deep = await stillpoint(['verify', '--deep', '--config', config, '--json'], { cwd: dir });
  t.is(deep.code, 1, deep.stderr);
  const report = JSON.parse(deep.stdout) as VerifyJson;
  t.false(report.ok);
  t.is(report.mode, 'deep');
  t.true(report.damagedChunks.length >= 1);
  const chunk = report.damagedChunks[0].chunk;
  t.regex(chunk, /^[0-9a-f]{64}$/);
  t.regex(report.damagedChunks[0].problem, /^damaged: /);
  const hit = report.damaged.find((d) => d.problems.some((p) => p.chunk === chunk))!;
  t.truthy(hit, 'a restore point that uses the damaged chunk is named');
  const problem = hit.problems.find((p) => p.chunk === chunk)!;
  t.is(points.get(hit.vm)?.id, hit.id);

  // The same in text: the restore point, its VM, the disk, offset and chunk.
  const text = await stillpoint(['verify', '--deep', '--config', config], { cwd: dir });
  t.is(text.code, 1);
  t.regex(text.stdout, /^verify \(deep\): 5 restore point\(s\), (\d+) of \1 chunk\(s\) checked: DAMAGED$/m);
  t.regex(text.stdout, new RegExp(`^  restore point ${hit.id} \\(job default, VM ${hit.vm}\\):\\n(    .*\\n)*    disk ${problem.disk!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} at ${problem.offset} chunk ${chunk}: chunk damaged`, 'm'));
  // --sample 100 checks every chunk too; verifying only another, sound restore point passes.
  const sample = await stillpoint(['verify', '--sample', '100%', '--config', config], { cwd: dir });
  t.is(sample.code, 1, sample.stdout);
  t.regex(sample.stdout, new RegExp(`chunk ${chunk}`));
  // A real sample: some of the chunks, chosen at random; damage is reported when the sample holds it.
  const half = await stillpoint(['verify', '--sample', '50', '--json', '--config', config], { cwd: dir });
  const halfReport = JSON.parse(half.stdout) as VerifyJson & { chunksChecked: number; chunksReferenced: number };
  t.is(halfReport.mode, 'sample');
  t.true(halfReport.chunksChecked < halfReport.chunksReferenced, `${halfReport.chunksChecked} of ${halfReport.chunksReferenced}`);
  t.is(half.code, halfReport.ok ? 0 : 1);
  if (!halfReport.ok) t.deepEqual(halfReport.damagedChunks.map((c) => c.chunk), [chunk]);
  const healthy = [...points.values()].find((p) => !report.damaged.some((d) => d.id === p.id));
  if (healthy) {
    const one = await stillpoint(['verify', healthy.id, '--deep', '--config', config], { cwd: dir });
    t.is(one.code, 0, one.stdout);
    t.regex(one.stdout, /^verify \(deep\): 1 restore point\(s\), .*: ok$/m);
  }

  // Restoring the damaged restore point fails, names the chunk, and leaves no partial file.
  const restore = await stillpoint(['restore', hit.id, '--config', config, '--disk', problem.disk!, '-o', 'damaged.img'], { cwd: dir });
  t.is(restore.code, 1, restore.stdout);
  t.true(restore.stderr.includes(`restore point ${hit.id}`), restore.stderr);
  t.true(restore.stderr.includes(`disk ${problem.disk}`), restore.stderr);
  t.true(restore.stderr.includes(chunk), restore.stderr);
  t.deepEqual(readdirSync(dir).filter((f) => f.startsWith('damaged')), []);
  // A byte range that does not touch the damaged chunk still restores.
  const size = points.get(hit.vm)!.disks.find((d) => d.id === problem.disk)!.virtualSize;
  const other = await stillpointBin(['restore', hit.id, '--config', config, '--disk', problem.disk!, '--range', `${problem.offset === 0 ? size - 4096 : 0}:4096`], dir);
  t.is(other.code, 0, other.stderr);
  t.is(other.stdout.length, 4096);

  // The damaged object removed: quick verification finds the chunk missing.
  rmSync(victim.path);
  const missing = await stillpoint(['verify', '--config', config], { cwd: dir });
  t.is(missing.code, 1, missing.stdout);
  t.regex(missing.stdout, new RegExp(`^  restore point ${hit.id} \\(job default, VM ${hit.vm}\\):$`, 'm'));
  t.regex(missing.stdout, new RegExp(`chunk ${chunk}: chunk missing`));
});
