import createDebug from 'debug';
import type { PresentedSnapshot, VolumeRef, VolumeSnapshot, VolumeSnapshotProvider } from '../../core/contracts/snapshot.ts';
import { NotFoundError, StillpointError } from '../../core/errors.ts';
import { asArray, asObject, num, optStr, parseDate, str } from '../hyperv/ps-json.ts';
import { type PowerShellRunner, psString } from '../hyperv/runner.ts';
import { mapPowerShellError } from '../hyperv/wmi.ts';
import { createScript, deleteScript, diskShadowError, importScript, isNotFound, parseCreate, unexposeScript, withSlash } from './diskshadow.ts';

const debug = createDebug('stillpoint:vss');

export interface VssProxyOptions {
  /** Where the proxy keeps imported metadata. */
  metadataDir: string;
  /** Folder under which the proxy exposes shadow copies (one subfolder per shadow copy). */
  mountRoot: string;
  /** How the host reaches `metadataDir` on the proxy to copy the .cab there; default `\\<proxy>\C$\…`. */
  metadataShare?: string;
}

export interface VssProviderOptions {
  /** Where the host keeps transportable metadata (.cab) and Stillpoint's record of each shadow copy. */
  metadataDir: string;
  /** VSS hardware provider id to use; default: VSS picks the provider that supports the volume. */
  providerId?: string;
  /** Per proxy name. A proxy not listed gets the defaults. */
  proxies: Record<string, VssProxyOptions>;
  now?: () => Date;
}

const CSV_PATH = /^[A-Za-z]:\\ClusterStorage\\[^\\]+\\?$/i;
const WINDOWS_VOLUME = /^([A-Za-z]:\\?$|[A-Za-z]:\\ClusterStorage\\[^\\]+\\?$|\\\\\?\\Volume\{[0-9a-fA-F-]{36}\}\\?$)/;

export const isCsv = (path: string) => CSV_PATH.test(path);

function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9]+/g, '_').replace(/^_|_$/g, '').slice(0, 40) || 'x';
}

/** Run a DiskShadow script through PowerShell (on this host, or on a proxy through Invoke-Command). */
export function diskShadowPs(dsh: string, name: string, remote?: string): string {
  const body = [
    '$dsh = @\'',
    dsh.replace(/\n$/, ''),
    '\'@',
    `$file = Join-Path $env:TEMP ${psString(`stillpoint-${name}.dsh`)}`,
    'Set-Content -LiteralPath $file -Value $dsh -Encoding ASCII',
    '$output = & diskshadow.exe /s $file 2>&1 | Out-String',
    '$code = $LASTEXITCODE',
    'Remove-Item -LiteralPath $file -Force',
    '[pscustomobject]@{ ExitCode = $code; Output = $output }',
  ];
  return remote ? [`Invoke-Command -ComputerName ${psString(remote)} -ScriptBlock {`, ...body, '}'].join('\n') : body.join('\n');
}

export function csvScript(): string {
  return [
    '[pscustomobject]@{',
    '  Host = $env:COMPUTERNAME',
    '  Volumes = @(Get-ClusterSharedVolume | ForEach-Object {',
    '    [pscustomobject]@{ Name = $_.Name; OwnerNode = [string]$_.OwnerNode.Name; State = [string]$_.State; Path = $_.SharedVolumeInfo.FriendlyVolumeName }',
    '  })',
    '}',
  ].join('\n');
}

/**
 * Volume snapshots on Windows through VSS transportable shadow copies (DiskShadow, hardware
 * provider): created on the host, imported and exposed on the off-host proxy, deleted on the host.
 * A Cluster Shared Volume is snapshotted on its coordinator (owner) node.
 */
export class VssSnapshotProvider implements VolumeSnapshotProvider {
  readonly name = 'vss';
  readonly #host: PowerShellRunner;
  readonly #options: VssProviderOptions;

  constructor(hostRunner: PowerShellRunner, options: VssProviderOptions) {
    this.#host = hostRunner;
    this.#options = options;
  }

  async close(): Promise<void> {
    await this.#host.close?.();
  }

  /** Windows volumes only: a drive (`D:\`), a Cluster Shared Volume or a volume GUID path. */
  servesSync(volume: VolumeRef): boolean {
    return WINDOWS_VOLUME.test(volume.path);
  }

  async serves(volume: VolumeRef): Promise<boolean> {
    return this.servesSync(volume);
  }

  async #run(script: string, operation: string, where: string): Promise<unknown> {
    try {
      return await this.#host.run(script);
    } catch (err) {
      throw mapPowerShellError(err, operation, where);
    }
  }

  async #diskShadow(dsh: string, name: string, operation: string, where: string, remote?: string): Promise<{ code: number; output: string }> {
    const o = asObject(await this.#run(diskShadowPs(dsh, name, remote), `DiskShadow ${operation}`, where), 'DiskShadow result', where);
    return { code: num(o, 'ExitCode', where), output: String(o.Output ?? '') };
  }

  /** CSV rule: the coordinator (owner) node takes the hardware shadow copy of a CSV; it must be online. */
  async #checkCsv(volume: VolumeRef, where: string): Promise<void> {
    const o = asObject(await this.#run(csvScript(), 'reading Cluster Shared Volumes (Get-ClusterSharedVolume)', where), 'CSV list', where);
    const host = str(o, 'Host', where);
    const want = withSlash(volume.path).toLowerCase();
    const csv = asArray(o.Volumes).map((v) => asObject(v, 'CSV', where)).find((v) => withSlash(String(v.Path ?? '')).toLowerCase() === want);
    if (!csv) throw new NotFoundError(`${volume.path} is not a Cluster Shared Volume of this cluster`, { where, hint: 'Check the path with Get-ClusterSharedVolume' });
    const name = str(csv, 'Name', where);
    if (optStr(csv, 'State') !== 'Online') {
      throw new StillpointError(`Cluster Shared Volume "${name}" is ${optStr(csv, 'State') ?? 'not online'}`, { where, hint: 'Bring the CSV online (Start-ClusterResource) before the backup' });
    }
    const owner = str(csv, 'OwnerNode', where);
    if (owner.toLowerCase() !== host.toLowerCase()) {
      throw new StillpointError(`Cluster Shared Volume "${name}" is owned by ${owner}, not by ${host} where Stillpoint runs`, {
        where,
        hint: `A transportable hardware shadow copy of a CSV is taken on its coordinator node: run the job on ${owner}, or move the CSV first (Move-ClusterSharedVolume -Name '${name}' -Node ${host})`,
      });
    }
  }

  #cab(id: string): string {
    return `${this.#options.metadataDir}\\stillpoint-${id.replace(/[{}]/g, '')}.cab`;
  }

  #record(id: string): string {
    return `${this.#options.metadataDir}\\stillpoint-${id.replace(/[{}]/g, '')}.json`;
  }

  async create(volume: VolumeRef, options: { jobId: string }): Promise<VolumeSnapshot> {
    const where = `vss volume ${volume.name} (${volume.path})`;
    if (!this.servesSync(volume)) throw new StillpointError('not a Windows volume path', { where, hint: 'VSS snapshots volumes such as D:\\ or C:\\ClusterStorage\\Volume1' });
    if (isCsv(volume.path)) await this.#checkCsv(volume, where);
    const now = (this.#options.now ?? (() => new Date()))();
    const alias = `stillpoint_${slug(options.jobId)}`;
    const pending = `${this.#options.metadataDir}\\stillpoint-${slug(options.jobId)}-${slug(volume.name)}-pending.cab`;
    const { code, output } = await this.#diskShadow(
      createScript({ volumePath: volume.path, metadataPath: pending, alias, providerId: this.#options.providerId }),
      `${slug(options.jobId)}-create`, 'create', where);
    if (code !== 0) throw diskShadowError(output, code, 'create', where);
    const shadow = parseCreate(output, alias, where);
    if (!shadow.attributes.includes('Transportable')) {
      throw new StillpointError(`shadow copy ${shadow.shadowId} is not transportable (attributes: ${shadow.attributes.join(' ')})`, {
        where, hint: 'Transportable shadow copies need a VSS hardware provider for the volume\'s LUN; install the storage array\'s provider',
      });
    }
    const snapshot: VolumeSnapshot = {
      id: shadow.shadowId, provider: 'vss', volume: { name: volume.name, path: volume.path }, createdAt: now.toISOString(), jobId: options.jobId,
    };
    await this.#run([
      `Rename-Item -LiteralPath ${psString(pending)} -NewName ${psString(this.#cab(snapshot.id).split('\\').pop()!)}`,
      '$record = @\'',
      JSON.stringify({ ...snapshot, shadowSetId: shadow.shadowSetId, providerId: shadow.providerId ?? null, deviceName: shadow.deviceName ?? null }),
      '\'@',
      `Set-Content -LiteralPath ${psString(this.#record(snapshot.id))} -Value $record -Encoding UTF8`,
    ].join('\n'), 'recording the shadow copy', where);
    debug('%s: shadow copy %s (set %s) attributes %s', where, shadow.shadowId, shadow.shadowSetId, shadow.attributes.join(' '));
    return snapshot;
  }

  #proxy(proxy: string): Required<VssProxyOptions> {
    const p = this.#options.proxies[proxy];
    const metadataDir = p?.metadataDir ?? 'C:\\ProgramData\\Stillpoint\\vss';
    return {
      metadataDir,
      mountRoot: p?.mountRoot ?? 'C:\\Stillpoint\\mnt',
      metadataShare: p?.metadataShare ?? `\\\\${proxy}\\${metadataDir.replace(/^([A-Za-z]):/, '$1$')}`,
    };
  }

  async present(snapshot: VolumeSnapshot, proxy: string): Promise<PresentedSnapshot> {
    const where = `vss snapshot ${snapshot.id} of ${snapshot.volume.path} on proxy ${proxy}`;
    const p = this.#proxy(proxy);
    const bare = snapshot.id.replace(/[{}]/g, '');
    const cabName = `stillpoint-${bare}.cab`;
    const mount = `${p.mountRoot}\\${bare}`;
    await this.#run([
      `Copy-Item -LiteralPath ${psString(this.#cab(snapshot.id))} -Destination ${psString(`${p.metadataShare}\\${cabName}`)} -Force`,
      `Invoke-Command -ComputerName ${psString(proxy)} -ScriptBlock { New-Item -ItemType Directory -Force -Path ${psString(mount)} | Out-Null }`,
    ].join('\n'), 'copying the shadow copy metadata to the proxy', where);
    const { code, output } = await this.#diskShadow(
      importScript({ metadataPath: `${p.metadataDir}\\${cabName}`, shadowId: snapshot.id, mountPath: mount }), `${bare}-import`, 'import', where, proxy);
    if (code !== 0) throw diskShadowError(output, code, 'import', where);
    const root = withSlash(snapshot.volume.path);
    return {
      snapshot,
      proxy,
      mapPath: (hostPath: string) => {
        if (!hostPath.toLowerCase().startsWith(root.toLowerCase())) {
          throw new StillpointError(`${hostPath} is not on volume ${snapshot.volume.path}`, { where, hint: 'The disk belongs to another off-host group' });
        }
        return `${mount}\\${hostPath.slice(root.length)}`;
      },
      unpresent: async () => {
        const r = await this.#diskShadow(unexposeScript(mount), `${bare}-unexpose`, 'unexpose', where, proxy);
        if (r.code !== 0 && !isNotFound(r.output)) throw diskShadowError(r.output, r.code, 'unexpose', where);
      },
    };
  }

  async delete(snapshot: VolumeSnapshot): Promise<void> {
    const where = `vss snapshot ${snapshot.id} of ${snapshot.volume.path}`;
    const bare = snapshot.id.replace(/[{}]/g, '');
    const { code, output } = await this.#diskShadow(deleteScript(snapshot.id), `${bare}-delete`, 'delete', where);
    if (code !== 0 && !isNotFound(output)) throw diskShadowError(output, code, 'delete', where);
    await this.#run(`Remove-Item -LiteralPath ${psString(this.#cab(snapshot.id))}, ${psString(this.#record(snapshot.id))} -Force -ErrorAction SilentlyContinue`,
      'removing the shadow copy metadata', where);
  }

  async list(volume?: VolumeRef): Promise<VolumeSnapshot[]> {
    const where = 'vss';
    const value = await this.#run([
      `Get-ChildItem -LiteralPath ${psString(this.#options.metadataDir)} -Filter 'stillpoint-*.json' -ErrorAction SilentlyContinue |`,
      '  ForEach-Object { Get-Content -LiteralPath $_.FullName -Raw | ConvertFrom-Json }',
    ].join('\n'), 'listing shadow copy records', where);
    return asArray(value).map((v) => {
      const o = asObject(v, 'shadow copy record', where);
      const vol = asObject(o.volume, 'volume', where);
      return {
        id: str(o, 'id', where), provider: 'vss', volume: { name: str(vol, 'name', where), path: str(vol, 'path', where) },
        // PowerShell 7's ConvertFrom-Json turns the ISO string into a date, written back with an offset.
        createdAt: parseDate(o.createdAt) ?? str(o, 'createdAt', where), jobId: str(o, 'jobId', where),
      };
    }).filter((s) => !volume || s.volume.path.toLowerCase() === volume.path.toLowerCase());
  }
}
