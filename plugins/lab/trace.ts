/**
 * The event trace: what the simulated host saw, in order, one JSON object a line in
 * `<lab>/events.jsonl` (append-only, shared by every process that uses the lab). Tests read it to
 * assert the order of DESIGN.md's job steps.
 */
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import createDebug from 'debug';

const debug = createDebug('stillpoint:lab:trace');

export type LabEventType =
  | 'checkpoint-requested' | 'guest-quiesced' | 'quiesce-failed' | 'avhdx-created' | 'guest-thawed' | 'checkpoint-created' | 'checkpoint-failed'
  | 'base-disk-read' | 'merge-started' | 'merged' | 'merge-failed'
  | 'reference-point-created' | 'reference-point-removed'
  | 'volume-snapshot-created' | 'volume-snapshot-presented' | 'volume-snapshot-unpresented' | 'volume-snapshot-deleted'
  | 'guest-started' | 'guest-stopped' | 'failure-injected' | 'disk-created';

export interface LabEvent {
  at: string;
  type: LabEventType;
  vm?: string;
  host?: string;
  disk?: string;
  path?: string;
  checkpoint?: string;
  volume?: string;
  snapshot?: string;
  detail?: string;
  [key: string]: unknown;
}

export class EventTrace {
  readonly path: string;
  constructor(path: string) {
    this.path = path;
    mkdirSync(dirname(path), { recursive: true });
  }

  record(type: LabEventType, fields: Omit<LabEvent, 'at' | 'type'> = {}): void {
    const event: LabEvent = { at: new Date().toISOString(), type, ...fields };
    debug('%s %o', type, fields);
    appendFileSync(this.path, JSON.stringify(event) + '\n');
  }
}

/** Every event of a lab's trace, in order (optionally only those from line `from` on). */
export function readEvents(path: string, from = 0): LabEvent[] {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch { return []; }
  return text.split('\n').filter(Boolean).slice(from).map((line) => JSON.parse(line) as LabEvent);
}
