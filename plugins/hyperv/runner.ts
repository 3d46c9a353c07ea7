import { StillpointError } from '../../core/errors.ts';

/**
 * The one seam between the Hyper-V driver and PowerShell: run a script, get its output as parsed JSON.
 *
 * The script's output objects are serialised by the runner (see `wrapScript`), so a script just emits
 * objects (e.g. `Get-VM | Select-Object Name, State`). A script that throws makes `run` reject with a
 * `PowerShellError` carrying PowerShell's error record. Two runners exist: `NodePowerShellRunner`
 * (node-powershell, Windows PowerShell 5.1 or PowerShell 7) and `ReplayRunner` (recorded fixtures,
 * for tests). Another implementation (a remoting client, a different PowerShell host) can replace
 * them without touching the driver.
 */
export interface PowerShellRunner {
  /** Which JSON shapes the output has: 5.1 writes enums as numbers and dates as `\/Date(ms)\/`,
   *  7 (with `-EnumsAsStrings`) writes enum names and ISO dates. The driver parses both. */
  readonly edition?: PowerShellEdition;
  run(script: string): Promise<unknown>;
  close?(): Promise<void>;
}

export type PowerShellEdition = '5.1' | '7';

/** PowerShell's error record, as the runner's envelope reports it. */
export interface PowerShellErrorRecord {
  message: string;
  /** e.g. `InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM` */
  fullyQualifiedErrorId?: string;
  /** e.g. `ObjectNotFound`, `PermissionDenied`, `InvalidOperation` */
  category?: string;
  /** .NET type of the exception, e.g. `Microsoft.HyperV.PowerShell.VirtualizationException` */
  exceptionType?: string;
  /** HRESULT of the exception (negative 32-bit number, e.g. -2147024891 = 0x80070005 access denied). */
  hresult?: number;
  targetObject?: string;
}

/** A script failed inside PowerShell (the script ran and threw), as opposed to PowerShell being unusable. */
export class PowerShellError extends StillpointError {
  readonly record: PowerShellErrorRecord;
  constructor(record: PowerShellErrorRecord, options: { where?: string; hint?: string } = {}) {
    super(`PowerShell reported: ${record.message}`, options);
    this.record = record;
  }
}

/** Marks the line of output that carries the envelope, so stray host output cannot be mistaken for it. */
export const ENVELOPE_MARKER = '<<stillpoint-json>>';

/**
 * Wrap a driver script for a real PowerShell: stop on every error, run it, and write one line with
 * `{ ok, value }` or `{ ok: false, error }` as compressed JSON. PowerShell 7 adds `-EnumsAsStrings`.
 */
export function wrapScript(script: string, edition: PowerShellEdition): string {
  const enums = edition === '7' ? ' -EnumsAsStrings' : '';
  return [
    "$ErrorActionPreference = 'Stop'",
    "$ProgressPreference = 'SilentlyContinue'",
    'try {',
    '  $__value = & {',
    script,
    '  }',
    '  $__out = @{ ok = $true; value = $__value }',
    '} catch {',
    '  $__e = $_',
    '  $__out = @{ ok = $false; error = @{',
    '    message = $__e.Exception.Message',
    '    fullyQualifiedErrorId = $__e.FullyQualifiedErrorId',
    '    category = [string]$__e.CategoryInfo.Category',
    '    exceptionType = $__e.Exception.GetType().FullName',
    '    hresult = $__e.Exception.HResult',
    '    targetObject = [string]$__e.TargetObject',
    '  } }',
    '}',
    `[Console]::Out.WriteLine('${ENVELOPE_MARKER}' + (ConvertTo-Json -InputObject $__out -Depth 12 -Compress${enums}))`,
  ].join('\n');
}

/** Read the envelope line out of PowerShell's stdout; return the value or throw `PowerShellError`. */
export function unwrapOutput(stdout: string, where: string): unknown {
  const line = stdout.split(/\r?\n/).reverse().find((l) => l.startsWith(ENVELOPE_MARKER));
  if (line === undefined) {
    throw new StillpointError('PowerShell wrote no result line', {
      where,
      hint: `Output was: ${JSON.stringify(stdout.slice(0, 400))}. Check that the script runs in that PowerShell by hand`,
    });
  }
  let envelope: unknown;
  try {
    envelope = JSON.parse(line.slice(ENVELOPE_MARKER.length));
  } catch (cause) {
    throw new StillpointError('PowerShell wrote a result line that is not JSON', { where, cause });
  }
  if (typeof envelope !== 'object' || envelope === null || !('ok' in envelope)) {
    throw new StillpointError('PowerShell wrote a result line without `ok`', { where });
  }
  const e = envelope as { ok: boolean; value?: unknown; error?: PowerShellErrorRecord };
  if (!e.ok) throw new PowerShellError(e.error ?? { message: 'unknown error' }, { where });
  return e.value ?? null;
}

/** A PowerShell single-quoted string literal (the only escape is doubling `'`). */
export function psString(value: string): string {
  return `'${value.replace(/'/g, "''").replace(/[\u2018\u2019\u201A\u201B]/g, (c) => c + c)}'`;
}

/** A literal for a WQL string inside a PowerShell single-quoted -Filter (WQL escapes `\` and `'`). */
export function wqlString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** A comma-separated list of PowerShell string literals. */
export function psList(values: readonly string[]): string {
  return values.map(psString).join(', ');
}
