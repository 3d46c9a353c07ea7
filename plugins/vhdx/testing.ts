/** Test entry points of the native library (the mutation fuzzer, an event-loop probe). */
import { call, callGrowing, p } from './native.ts';

export interface FuzzReport {
  cases: number;
  opened: number;
  errors: number;
  panics: number;
  firstPanic: string;
  maxCaseMs: number;
  totalMs: number;
  perTarget: Record<'headers' | 'regionTables' | 'metadataTable' | 'metadataItems' | 'bat' | 'sectorBitmaps' | 'log', number>;
}

/**
 * Runs `cases` mutation cases on the image at `path` inside the native library: bytes flipped in
 * headers, region tables, metadata, BAT, sector bitmaps and log (checksums fixed up half of the
 * time), then open + info + allocation map + reads. Panics are caught and counted.
 */
export async function fuzzImage(path: string, seed: number, cases: number): Promise<FuzzReport> {
  const { out, n } = await callGrowing('fuzz', [p.str(path), p.i64(seed), p.i64(cases)], path);
  return JSON.parse(out.subarray(0, n).toString('utf8')) as FuzzReport;
}

/** Sleeps `ms` on a worker thread, then fills `target` with `value`; resolves to the address it wrote to. */
export function sleepFill(ms: number, target: Buffer, value: number): Promise<number> {
  return call('selftest_sleep_fill', [p.i64(ms), p.buf(target), p.i64(target.length), p.i32(value)], 'selftest');
}
