/**
 * Snapshot labels imgstream reads or writes. containerd passes a backend snapshotter only the
 * labels named `containerd.io/snapshot.ref` or starting with `containerd.io/snapshot/`.
 */
export const SnapshotLabel = Object.freeze({
  /** The chain ID a layer snapshot will be committed under; set by containerd's unpacker on Prepare. */
  TARGET_REF: 'containerd.io/snapshot.ref',
  /** CRI image annotations (containerd with `disable_snapshot_annotations = false`). */
  CRI_IMAGE_REF: 'containerd.io/snapshot/cri.image-ref',
  CRI_MANIFEST_DIGEST: 'containerd.io/snapshot/cri.manifest-digest',
  CRI_LAYER_DIGEST: 'containerd.io/snapshot/cri.layer-digest',
  /** Comma-separated digests of this layer and the layers above it (may be truncated by containerd). */
  CRI_IMAGE_LAYERS: 'containerd.io/snapshot/cri.image-layers',
  /** The equivalent labels `ctr-remote images rpull` sends. */
  STARGZ_IMAGE_REF: 'containerd.io/snapshot/remote/stargz.reference',
  STARGZ_LAYER_DIGEST: 'containerd.io/snapshot/remote/stargz.digest',
  STARGZ_IMAGE_LAYERS: 'containerd.io/snapshot/remote/stargz.layers',
  /** Set by imgstream on snapshots whose files are served remotely (value: the layer digest). */
  REMOTE: 'containerd.io/snapshot/imgstream.remote',
});

/** What the labels of a Prepare say about the layer being unpacked. */
export interface LayerLabels {
  /** The chain ID the layer will be committed under. */
  readonly targetRef: string;
  /** The image reference, e.g. `registry.example/app:1.0`. */
  readonly imageRef?: string;
  readonly manifestDigest?: string;
  readonly layerDigest?: string;
  /** Digests of this layer and the ones above it, when containerd sent them. */
  readonly imageLayers: readonly string[];
  /** Which label family they came from. */
  readonly source: 'cri' | 'stargz' | 'none';
}

/**
 * Reads the layer labels of a Prepare, from the CRI family or the stargz family (CRI wins when both
 * are present). Undefined when there is no target ref: then the Prepare is not unpacking a layer.
 */
export function parseLayerLabels(labels: Readonly<Record<string, string>>): LayerLabels | undefined {
  const targetRef = labels[SnapshotLabel.TARGET_REF];
  if (targetRef === undefined || targetRef === '') return undefined;
  const split = (v: string | undefined): string[] => (v === undefined || v === '' ? [] : v.split(',').filter((s) => s !== ''));
  const criLayer = labels[SnapshotLabel.CRI_LAYER_DIGEST];
  if (criLayer !== undefined) {
    return {
      targetRef,
      imageRef: labels[SnapshotLabel.CRI_IMAGE_REF],
      manifestDigest: labels[SnapshotLabel.CRI_MANIFEST_DIGEST],
      layerDigest: criLayer,
      imageLayers: split(labels[SnapshotLabel.CRI_IMAGE_LAYERS]),
      source: 'cri',
    };
  }
  const stargzLayer = labels[SnapshotLabel.STARGZ_LAYER_DIGEST];
  if (stargzLayer !== undefined) {
    return {
      targetRef,
      imageRef: labels[SnapshotLabel.STARGZ_IMAGE_REF],
      layerDigest: stargzLayer,
      imageLayers: split(labels[SnapshotLabel.STARGZ_IMAGE_LAYERS]),
      source: 'stargz',
    };
  }
  return { targetRef, imageLayers: [], source: 'none' };
}
