import type { SnapshotKind, SnapshotMount } from '../snapshot-info.js';

/** What the mount computation needs to know about one snapshot. */
export interface MountPlan {
  readonly kind: SnapshotKind;
  /** The snapshot's own upper directory (`<root>/snapshots/<id>/fs`). */
  readonly upperDir: string;
  /** The overlay work directory of an active snapshot (`<root>/snapshots/<id>/work`). */
  readonly workDir: string;
  /** Content directories of the committed parents, nearest parent first. */
  readonly lowerDirs: readonly string[];
  /** Extra overlay options placed first (e.g. `index=off`). */
  readonly overlayOptions: readonly string[];
}

/**
 * The mounts containerd performs for an active or view snapshot, with the overlayfs snapshotter's
 * shapes:
 * - no parent: a bind mount of the snapshot's own directory, `rw` (active) or `ro` (view);
 * - a view of exactly one layer: a read-only bind mount of that layer (overlayfs needs two lowers);
 * - a view of several layers: overlay with only `lowerdir`;
 * - active with parents: overlay with `workdir`, `upperdir` and `lowerdir` (nearest first).
 */
export function overlayMounts(plan: MountPlan): SnapshotMount[] {
  if (plan.lowerDirs.length === 0) {
    return [{ type: 'bind', source: plan.upperDir, options: [plan.kind === 'view' ? 'ro' : 'rw', 'rbind'] }];
  }
  if (plan.kind !== 'active' && plan.lowerDirs.length === 1) {
    return [{ type: 'bind', source: plan.lowerDirs[0]!, options: ['ro', 'rbind'] }];
  }
  const options = [...plan.overlayOptions];
  if (plan.kind === 'active') options.push(`workdir=${plan.workDir}`, `upperdir=${plan.upperDir}`);
  options.push(`lowerdir=${plan.lowerDirs.join(':')}`);
  return [{ type: 'overlay', source: 'overlay', options }];
}
