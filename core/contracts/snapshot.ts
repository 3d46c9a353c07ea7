/** A volume as the host sees it: a named place holding VM files. */
export interface VolumeRef {
  name: string;
  /** Where the volume is mounted on the host (a directory). */
  path: string;
}

export interface VolumeSnapshot {
  /** Provider-specific id; Stillpoint's snapshots carry `stillpoint` in their name. */
  id: string;
  provider: string;
  volume: VolumeRef;
  /** Where the snapshot's contents can be read on the host (if it can). */
  path?: string;
  createdAt: string;
  jobId: string;
}

/** What a proxy needs to read from a presented snapshot. */
export interface PresentedSnapshot {
  snapshot: VolumeSnapshot;
  proxy: string;
  /** Translate a path on the live volume into the path the proxy reads from. */
  mapPath(hostPath: string): string;
  /** Undo the presentation (unmask, unmount); deletion is separate. */
  unpresent(): Promise<void>;
}

/** A volume-snapshot provider (btrfs, VSS) for the off-host transport. */
export interface VolumeSnapshotProvider {
  readonly name: string;
  serves(volume: VolumeRef): Promise<boolean>;
  create(volume: VolumeRef, options: { jobId: string }): Promise<VolumeSnapshot>;
  present(snapshot: VolumeSnapshot, proxy: string): Promise<PresentedSnapshot>;
  /** Delete; deleting a snapshot that is already gone is not an error. */
  delete(snapshot: VolumeSnapshot): Promise<void>;
  /** Snapshots this provider made for Stillpoint, for the journal's reconcile. */
  list(volume?: VolumeRef): Promise<VolumeSnapshot[]>;
}
