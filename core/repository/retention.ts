import { z } from 'zod';
import type { Manifest } from './format.ts';

/** A job's retention: how many restore points to keep, per VM (0 or absent = that rule keeps none). */
export const retentionSchema = z.object({
  keepLast: z.number().int().nonnegative().optional(),
  keepDaily: z.number().int().nonnegative().optional(),
  keepWeekly: z.number().int().nonnegative().optional(),
  keepMonthly: z.number().int().nonnegative().optional(),
});
export type Retention = z.output<typeof retentionSchema>;

export interface RetentionDecision {
  keep: Array<{ manifest: Manifest; reasons: string[] }>;
  remove: Manifest[];
}

/**
 * Decide, per job and VM, which restore points a retention keeps (as restic's `forget`):
 * keep-last N newest; keep-daily N: the newest of each of the last N days that have one; weekly
 * by ISO week, monthly by calendar month (UTC). A restore point kept by any rule is kept.
 * A policy with no rule keeps everything.
 */
export function applyRetention(manifests: Manifest[], retention: Retention): RetentionDecision {
  const groups = new Map<string, Manifest[]>();
  for (const m of manifests) {
    const key = `${m.job}\u0000${m.vm.id}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = []));
    g.push(m);
  }
  const anyRule = [retention.keepLast, retention.keepDaily, retention.keepWeekly, retention.keepMonthly].some((n) => n !== undefined);
  const decision: RetentionDecision = { keep: [], remove: [] };
  for (const group of groups.values()) {
    const newest = [...group].sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || b.id.localeCompare(a.id));
    const reasons = new Map<string, string[]>();
    const mark = (m: Manifest, why: string) => {
      const r = reasons.get(m.id) ?? [];
      r.push(why);
      reasons.set(m.id, r);
    };
    if (!anyRule) newest.forEach((m) => mark(m, 'no retention rule'));
    newest.slice(0, retention.keepLast ?? 0).forEach((m, i) => mark(m, `last ${i + 1}`));
    const bucketRule = (n: number | undefined, name: string, bucket: (d: Date) => string) => {
      if (!n) return;
      const seen = new Set<string>();
      for (const m of newest) {
        const b = bucket(new Date(m.time));
        if (seen.has(b)) continue;
        seen.add(b);
        if (seen.size > n) break;
        mark(m, `${name} ${b}`);
      }
    };
    bucketRule(retention.keepDaily, 'daily', (d) => d.toISOString().slice(0, 10));
    bucketRule(retention.keepWeekly, 'weekly', isoWeek);
    bucketRule(retention.keepMonthly, 'monthly', (d) => d.toISOString().slice(0, 7));
    for (const m of newest) {
      const r = reasons.get(m.id);
      if (r) decision.keep.push({ manifest: m, reasons: r });
      else decision.remove.push(m);
    }
  }
  return decision;
}

/** ISO 8601 week, e.g. "2026-W48". */
export function isoWeek(date: Date): string {
  const d = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const day = d.getUTCDay() || 7;
  d.setUTCDate(d.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(d.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((d.getTime() - yearStart) / 86_400_000 + 1) / 7);
  return `${d.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}
