import { readFileSync, writeFileSync } from 'node:fs';
import { StillpointError } from '../../core/errors.ts';
import { type PowerShellEdition, PowerShellError, type PowerShellErrorRecord, type PowerShellRunner } from './runner.ts';

/**
 * One recorded scenario: the exact scripts the driver sent to a real host, in order, and what the
 * real cmdlets answered, in Windows PowerShell 5.1 shapes (`ps51`) and PowerShell 7 shapes (`ps7`).
 * `output` is used for both when they are identical (no enums and no dates in the answer).
 */
export interface Fixture {
  scenario: string;
  description: string;
  /** What the host was, e.g. "Windows Server 2019 Datacenter 17763, standalone". */
  host: string;
  calls: FixtureCall[];
}

export interface FixtureCall {
  /** What the call is for, e.g. "Get-VM". */
  label: string;
  /** The script, one string per line (joined with "\n" it is exactly what the driver sends). */
  script: string[];
  ps51?: unknown;
  ps7?: unknown;
  output?: unknown;
  /** The script threw: PowerShell's error record. */
  error?: PowerShellErrorRecord;
}

export function loadFixture(path: string): Fixture {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (cause) {
    throw new StillpointError('cannot read fixture', { where: path, cause });
  }
  const f = parsed as Fixture;
  if (typeof f !== 'object' || f === null || !Array.isArray(f.calls) || typeof f.scenario !== 'string') {
    throw new StillpointError('not a fixture (needs scenario and calls[])', { where: path });
  }
  f.calls.forEach((c, i) => {
    if (!Array.isArray(c.script) || !c.script.every((l) => typeof l === 'string')) {
      throw new StillpointError(`calls[${i}].script must be an array of lines`, { where: path });
    }
    if (!('error' in c) && !('output' in c) && !('ps51' in c && 'ps7' in c)) {
      throw new StillpointError(`calls[${i}] (${c.label}) needs output, ps51 and ps7, or error`, { where: path });
    }
  });
  return f;
}

/** Where two scripts first differ, for a readable failure. */
function firstDifference(expected: string, actual: string): string {
  const e = expected.split('\n');
  const a = actual.split('\n');
  for (let i = 0; i < Math.max(e.length, a.length); i++) {
    if (e[i] !== a[i]) {
      return `line ${i + 1}:\n  fixture: ${JSON.stringify(e[i] ?? '<end of script>')}\n  driver:  ${JSON.stringify(a[i] ?? '<end of script>')}`;
    }
  }
  return 'no difference';
}

/**
 * Replays a fixture: every `run` must send exactly the next recorded script (or it fails, naming the
 * line that differs), and answers what the real cmdlets answered in the chosen edition's shapes.
 */
export class ReplayRunner implements PowerShellRunner {
  readonly edition: PowerShellEdition;
  readonly fixture: Fixture;
  readonly #where: string;
  #next = 0;

  constructor(fixture: Fixture, edition: PowerShellEdition, where = `fixture ${fixture.scenario}`) {
    this.fixture = fixture;
    this.edition = edition;
    this.#where = where;
  }

  static fromFile(path: string, edition: PowerShellEdition): ReplayRunner {
    return new ReplayRunner(loadFixture(path), edition, path);
  }

  /** How many recorded calls have been replayed. */
  get consumed(): number {
    return this.#next;
  }

  async run(script: string): Promise<unknown> {
    const index = this.#next;
    const call = this.fixture.calls[index];
    if (!call) {
      throw new StillpointError(
        `the driver sent script #${index + 1} but the fixture has only ${this.fixture.calls.length}:\n${script}`,
        { where: this.#where, hint: 'Record this scenario again on a real host, or fix the driver' },
      );
    }
    const expected = call.script.join('\n');
    if (script !== expected) {
      throw new StillpointError(
        `script #${index + 1} (${call.label}) differs from the recording at ${firstDifference(expected, script)}`,
        { where: this.#where, hint: 'A changed script must be recorded again on a real host (see plugins/hyperv/README.md)' },
      );
    }
    this.#next++;
    if (call.error) throw new PowerShellError(call.error, { where: `${this.#where} call #${index + 1} (${call.label})` });
    const value = 'output' in call ? call.output : this.edition === '5.1' ? call.ps51 : call.ps7;
    return value === undefined ? null : structuredClone(value);
  }

  /** Fail when recorded calls were not replayed (the driver sent fewer scripts than the real one did). */
  assertDone(): void {
    if (this.#next !== this.fixture.calls.length) {
      const left = this.fixture.calls.slice(this.#next).map((c) => c.label).join(', ');
      throw new StillpointError(`${this.fixture.calls.length - this.#next} recorded call(s) not replayed: ${left}`, { where: this.#where });
    }
  }
}

/**
 * Wraps a real runner on a real host and records a fixture: run a scenario with it once under
 * Windows PowerShell 5.1 and once under PowerShell 7, then `merge` the two recordings.
 */
export class RecordingRunner implements PowerShellRunner {
  readonly edition?: PowerShellEdition;
  readonly #inner: PowerShellRunner;
  readonly calls: FixtureCall[] = [];

  constructor(inner: PowerShellRunner) {
    this.#inner = inner;
    this.edition = inner.edition;
  }

  async run(script: string): Promise<unknown> {
    const label = script.split('\n').find((l) => /^[A-Z][a-z]+-[A-Za-z]+/.test(l.trim()))?.trim().split(/\s/)[0] ?? 'script';
    const key = this.#inner.edition === '7' ? 'ps7' : 'ps51';
    try {
      const value = await this.#inner.run(script);
      this.calls.push({ label, script: script.split('\n'), [key]: value });
      return value;
    } catch (err) {
      if (err instanceof PowerShellError) this.calls.push({ label, script: script.split('\n'), error: err.record });
      throw err;
    }
  }

  save(path: string, meta: { scenario: string; description: string; host: string }): void {
    const fixture: Fixture = { ...meta, calls: this.calls };
    writeFileSync(path, JSON.stringify(fixture, null, 2) + '\n');
  }

  /** Merge a 5.1 recording and a 7 recording of the same scenario (same scripts) into one fixture. */
  static merge(ps51: Fixture, ps7: Fixture): Fixture {
    if (ps51.calls.length !== ps7.calls.length) {
      throw new StillpointError(`recordings differ in length (${ps51.calls.length} vs ${ps7.calls.length})`, { where: ps51.scenario });
    }
    return {
      ...ps51,
      calls: ps51.calls.map((c, i) => {
        const other = ps7.calls[i];
        if (c.script.join('\n') !== other.script.join('\n')) {
          throw new StillpointError(`recordings differ at call #${i + 1}`, { where: ps51.scenario });
        }
        if (c.error) return c;
        const same = JSON.stringify(c.ps51) === JSON.stringify(other.ps7);
        return same ? { label: c.label, script: c.script, output: c.ps51 } : { label: c.label, script: c.script, ps51: c.ps51, ps7: other.ps7 };
      }),
    };
  }

  async close(): Promise<void> {
    await this.#inner.close?.();
  }
}
