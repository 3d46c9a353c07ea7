import type { Engine } from '../engine/engine.ts';
import type { JobResult, VmRun } from '../engine/types.ts';
import type { CliIo } from './command.ts';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

/** A plain text table; columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** How progress is shown on a stream: redrawn in place on a terminal, plain lines otherwise, none for `--json`. */
export type ProgressMode = 'tty' | 'plain' | 'none';

export function progressMode(stream: { isTTY?: boolean }, json: boolean): ProgressMode {
  return json ? 'none' : stream.isTTY ? 'tty' : 'plain';
}

/**
 * Writes progress: `say` prints a line (ending a live line first); `live` redraws one line in
 * place, on a terminal only. Nothing is written in mode `none`.
 */
export class ProgressWriter {
  private isLive = false;
  constructor(private readonly stream: { write(s: string): unknown }, readonly mode: ProgressMode) {}
  say(line: string): void {
    if (this.mode === 'none') return;
    this.end();
    this.stream.write(`${line}\n`);
  }
  live(line: string): void {
    if (this.mode !== 'tty') return;
    this.stream.write(`\r\x1b[2K${line}`);
    this.isLive = true;
  }
  /** End a live line (before other output). */
  end(): void {
    if (this.isLive) { this.stream.write('\n'); this.isLive = false; }
  }
}

/** Percentage, rate and ETA of `done` of `total` bytes since `startedAt` (ms). */
export function rateAndEta(done: number, total: number, startedAt: number, now = Date.now()): { pct: string; rate: string; eta: string } {
  const secs = Math.max(0.001, (now - startedAt) / 1000);
  const rate = done / secs;
  return {
    pct: total > 0 ? `${Math.min(100, Math.floor((done / total) * 100))}%` : '',
    rate: `${formatBytes(rate)}/s`,
    eta: rate > 0 && total > done ? `ETA ${formatDuration(((total - done) / rate) * 1000)}` : '',
  };
}

/**
 * Progress of a backup: on a terminal one line per disk redrawn in place (bytes, rate, ETA);
 * otherwise plain lines when a VM starts a step and when a disk is done. `--json` prints nothing here.
 */
export function attachProgress(engine: Engine, io: CliIo, mode: ProgressMode): void {
  if (mode === 'none') return;
  const w = new ProgressWriter(io.stdout, mode);
  const h = engine.hooks;
  const label = (run: VmRun) => `${run.vm.name}`;
  const say = (s: string) => w.say(s);
  h.jobStart.tap('progress', (job) => say(`job ${job.job}: run ${job.runId}`));
  h.decision.tap('progress', (d, report) => { say(`${report.vm.name}: ${d.method} - ${d.reason}`); return d; });
  h.checkpointCreated.tap('progress', (run, cp) => say(`${label(run)}: checkpoint ${cp.name} created (${cp.disks.length} disk${cp.disks.length === 1 ? '' : 's'})`));
  h.volumeSnapshotCreated.tap('progress', (s) => say(`volume ${s.volume.name}: snapshot ${s.id} created`));
  h.volumeSnapshotDeleted.tap('progress', (s, _g, err) => say(`volume ${s.volume.name}: snapshot ${s.id} ${err ? `NOT deleted: ${err}` : 'deleted'}`));
  const started = new Map<string, number>();
  h.diskRead.tap('progress', (run, disk) => {
    started.set(`${run.vm.id}/${disk.diskId}`, Date.now());
    if (mode === 'plain') say(`${label(run)}: reading disk ${disk.diskId} (${disk.path})`);
  });
  h.diskProgress.tap('progress', (run, p) => {
    if (mode !== 'tty') return;
    const { pct, rate, eta } = rateAndEta(p.bytesRead, p.totalBytes, started.get(`${run.vm.id}/${p.diskId}`) ?? Date.now());
    w.live(`${label(run)} ${p.diskId}: ${pct} read ${formatBytes(p.bytesRead)} of ${formatBytes(p.totalBytes)}, stored ${formatBytes(p.bytesStored)}, ${rate} ${eta}`);
  });
  h.diskStored.tap('progress', (run, r) => say(`${label(run)}: disk ${r.diskId} stored: read ${formatBytes(r.bytesRead)}${r.bytesUnchanged ? ` (${formatBytes(r.bytesUnchanged)} of it unchanged)` : ''}, stored ${formatBytes(r.bytesStored)} in ${formatDuration(r.durationMs)}${r.fullRead ? ` (${r.reason ?? 'full read'})` : ' (changed ranges only)'}`));
  h.afterMerge.tap('progress', (run, cp, err) => say(`${label(run)}: checkpoint ${cp.name} ${err ? `NOT merged: ${err}` : 'merged'}`));
  h.vmDone.tap('progress', (r) => say(`${r.vm.name}: ${r.outcome}${r.error ? ` - ${r.error}` : ''}`));
}

/**
 * The summary table of a job: VM, method and why, bytes read and how (`incremental (changed ranges)` or
 * `full read: <why>`), bytes stored, duration, result.
 */
export function summary(result: JobResult): string {
  const lines: string[] = [];
  lines.push(`job ${result.job} (run ${result.runId}): ${result.status}, ${formatDuration(result.durationMs)}`);
  for (const r of result.reconciled) lines.push(`  reconcile: ${r}`);
  if (result.error) lines.push(`  error: ${result.error}`);
  if (result.vms.length > 0) {
    lines.push(table(
      ['VM', 'METHOD', 'WHY', 'READ', 'HOW READ', 'STORED', 'DURATION', 'RESULT'],
      result.vms.map((v) => [v.vm.name, v.method, v.reason, formatBytes(v.bytesRead), v.readMode ?? '-', formatBytes(v.bytesStored), formatDuration(v.durationMs),
        v.outcome === 'success' ? `ok ${v.restorePoint ?? ''}`.trim() : `${v.outcome}${v.error && v.error !== v.reason ? `: ${v.error}` : ''}`]),
    ));
    for (const v of result.vms) for (const w of v.warnings) lines.push(`  warning (${v.vm.name}): ${w}`);
  }
  return lines.join('\n');
}
