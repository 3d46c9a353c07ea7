import { StillpointError, TransientError } from '../../core/errors.ts';

/**
 * DiskShadow scripts for transportable shadow copies, and readers of DiskShadow's output.
 * Every script is built from its parameters only, so tests compare it line for line.
 */

/** The shadow copy of a transportable set, for import on a proxy: create it with its metadata (.cab). */
export function createScript(o: { volumePath: string; metadataPath: string; alias: string; providerId?: string }): string {
  return [
    'set context persistent',
    'set option transportable',
    'set verbose off',
    `set metadata "${o.metadataPath}"`,
    'begin backup',
    `add volume ${withSlash(o.volumePath)} alias ${o.alias}${o.providerId ? ` provider ${braced(o.providerId)}` : ''}`,
    'create',
    'end backup',
    '',
  ].join('\n');
}

/** On the proxy: import the transportable set from its metadata and expose the shadow copy at a folder. */
export function importScript(o: { metadataPath: string; shadowId: string; mountPath: string }): string {
  return [
    'set context persistent',
    `load metadata "${o.metadataPath}"`,
    'import',
    `expose ${braced(o.shadowId)} "${o.mountPath}"`,
    '',
  ].join('\n');
}

export function unexposeScript(mountPath: string): string {
  return [`unexpose "${mountPath}"`, ''].join('\n');
}

export function deleteScript(shadowId: string): string {
  return [`delete shadows id ${braced(shadowId)}`, ''].join('\n');
}

export function withSlash(path: string): string {
  return path.endsWith('\\') ? path : `${path}\\`;
}

export function braced(id: string): string {
  const bare = id.replace(/^\{|\}$/g, '');
  return `{${bare}}`;
}

export interface CreatedShadow {
  shadowId: string;
  shadowSetId: string;
  deviceName?: string;
  originalVolume?: string;
  attributes: string[];
  providerId?: string;
  creationTime?: string;
}

/** Known VSS HRESULTs in DiskShadow errors, with what to do. */
const VSS_ERRORS: Record<string, { name: string; hint: string; transient?: boolean }> = {
  '8004230c': { name: 'VSS_E_VOLUME_NOT_SUPPORTED', hint: 'No shadow copy provider supports this volume for transportable shadow copies: install and register the storage array\'s VSS hardware provider (vssadmin list providers)' },
  '8004230e': { name: 'VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER', hint: 'The configured provider does not support this volume; check the provider option or the LUN\'s array' },
  '80042306': { name: 'VSS_E_PROVIDER_VETO', hint: 'The hardware provider refused the shadow copy; see the provider\'s event log entries' },
  '80042317': { name: 'VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED', hint: 'Too many shadow copies exist for this volume; delete old ones (stillpoint cleanup, or diskshadow delete shadows)' },
  '8004231f': { name: 'VSS_E_INSUFFICIENT_STORAGE', hint: 'Not enough space for the shadow copy on the array or shadow storage' },
  '80042316': { name: 'VSS_E_SNAPSHOT_SET_IN_PROGRESS', hint: 'Another shadow copy is being created on this host; it retries later', transient: true },
  '80042313': { name: 'VSS_E_FLUSH_WRITES_TIMEOUT', hint: 'The system could not flush writes in time; it retries later', transient: true },
  '80042314': { name: 'VSS_E_HOLD_WRITES_TIMEOUT', hint: 'The system could not hold writes in time; it retries later', transient: true },
};

/** Turn a failed DiskShadow run into a clear error (the HRESULT and its meaning, when DiskShadow printed one). */
export function diskShadowError(output: string, exitCode: number, operation: string, where: string): StillpointError {
  const hr = /Returned HRESULT:\s*(?:0x)?([0-9a-fA-F]{8})/.exec(output)?.[1]?.toLowerCase();
  const text = /Error text:\s*(.+)/.exec(output)?.[1]?.trim();
  const known = hr ? VSS_ERRORS[hr] : undefined;
  const message = `DiskShadow ${operation} failed (exit code ${exitCode})${hr ? `: HRESULT 0x${hr.toUpperCase()}` : ''}${known ? ` ${known.name}` : ''}${text ? ` (${text})` : ''}`;
  const hint = known?.hint ?? `DiskShadow's output: ${JSON.stringify(output.trim().split(/\r?\n/).slice(-6).join(' | '))}`;
  return known?.transient ? new TransientError(message, { where, hint }) : new StillpointError(message, { where, hint });
}

/** Read the shadow copy DiskShadow created from its `create` output (the alias line and the listing). */
export function parseCreate(output: string, alias: string, where: string): CreatedShadow {
  const idLine = new RegExp(`Alias ${alias} for shadow ID (\\{[0-9a-fA-F-]{36}\\}) set as environment variable`).exec(output);
  const setLine = /Alias VSS_SHADOW_SET for shadow set ID (\{[0-9a-fA-F-]{36}\}) set as environment variable/.exec(output);
  if (!idLine || !setLine) {
    throw new StillpointError('DiskShadow reported no shadow copy for the volume', {
      where, hint: `DiskShadow's output did not name the shadow copy: ${JSON.stringify(output.trim().slice(-400))}`,
    });
  }
  const block = output.slice(output.indexOf(`* Shadow copy ID = ${idLine[1]}`));
  const field = (name: string) => new RegExp(`- ${name}:\\s*(.+)`).exec(block)?.[1]?.trim();
  return {
    shadowId: idLine[1].toLowerCase(),
    shadowSetId: setLine[1].toLowerCase(),
    deviceName: field('Shadow copy device name'),
    originalVolume: field('Original volume name'),
    attributes: (field('Attributes') ?? '').split(/\s+/).filter(Boolean),
    providerId: field('Provider ID'),
    creationTime: field('Creation time'),
  };
}

/** DiskShadow's answer to deleting a shadow copy that no longer exists. */
export function isNotFound(output: string): boolean {
  return /not found|does not exist|VSS_E_OBJECT_NOT_FOUND|80042308/i.test(output);
}
