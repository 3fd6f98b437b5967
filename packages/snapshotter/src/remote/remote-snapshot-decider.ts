import type { LayerLabels } from '../labels.js';

/** What the snapshotter tells a decider about a layer containerd is about to unpack. */
export interface RemoteSnapshotRequest {
  /** The key containerd prepares the layer's active snapshot under. */
  readonly key: string;
  /** The committed parent (the chain below this layer), '' for the bottom layer. */
  readonly parent: string;
  /** All labels of the Prepare. */
  readonly labels: Readonly<Record<string, string>>;
  /** The parsed layer labels (chain ID, image ref, layer digest...). */
  readonly layer: LayerLabels;
}

/** A decider's answer. */
export type RemoteSnapshotDecision =
  | {
      readonly remote: true;
      /** The directory holding the layer's files (a FUSE layer view or a finished local layer cache dir). */
      readonly contentDir: string;
      /** Extra labels for the committed snapshot (imgstream adds {@link SnapshotLabel.REMOTE}). */
      readonly labels?: Readonly<Record<string, string>>;
    }
  | {
      readonly remote: false;
      /** Why the layer is not remote (not streamable, no labels, error...), for logs and events. */
      readonly reason: string;
    };

/**
 * The hook that turns a layer into a remote snapshot. On `Prepare` with a
 * `containerd.io/snapshot.ref` label, the snapshotter asks the decider; when it answers
 * `remote: true`, the snapshotter commits the snapshot under the chain ID with the decider's
 * content directory as the layer and answers AlreadyExists, so containerd skips download and unpack.
 * Otherwise it prepares an ordinary active snapshot and containerd unpacks the layer itself.
 *
 * The FUSE-backed implementation comes with the streaming work; this package only defines the
 * contract and the commit path. A decider that throws is treated as `remote: false`.
 */
export interface RemoteSnapshotDecider {
  decide(request: RemoteSnapshotRequest, options: { signal?: AbortSignal }): Promise<RemoteSnapshotDecision>;
  /**
   * Optional: where the files of a committed remote snapshot are now, asked whenever mounts above
   * it are computed (Prepare, View, Mounts). Lets a layer switch from its FUSE view to its local
   * cache directory once downloaded, and re-attaches layers after a restart. Default: the
   * `contentDir` recorded at commit. A rejection fails the call.
   */
  lowerDir?(snapshot: RemoteSnapshotInfo, options: { signal?: AbortSignal }): Promise<string>;
}

/** A committed remote snapshot, as {@link RemoteSnapshotDecider.lowerDir} sees it. */
export interface RemoteSnapshotInfo {
  readonly name: string;
  /** The directory recorded when it was committed. */
  readonly contentDir: string;
  /** Its labels (the Prepare's, plus imgstream's remote label). */
  readonly labels: Readonly<Record<string, string>>;
}
