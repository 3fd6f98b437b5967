/** The three kinds of snapshot containerd knows. */
export type SnapshotKind = 'view' | 'active' | 'committed';

/** Public metadata of one snapshot (containerd's `Info`). */
export interface SnapshotInfo {
  /** The key of an active or view snapshot, or the name of a committed one. */
  readonly name: string;
  /** Name of the committed parent, '' for a base snapshot. */
  readonly parent: string;
  readonly kind: SnapshotKind;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly labels: Readonly<Record<string, string>>;
}

/** Disk usage of a snapshot's own directory (not its parents). */
export interface SnapshotUsage {
  /** Bytes allocated on disk (st_blocks * 512, hard links counted once). */
  readonly sizeBytes: number;
  /** Distinct inodes, the directory itself included. */
  readonly inodes: number;
}

/** One mount containerd performs (containerd's `types.Mount`). */
export interface SnapshotMount {
  readonly type: string;
  readonly source: string;
  readonly target?: string;
  readonly options: readonly string[];
}
