import { isDigest, sha256Digest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import { INDEX_ARTIFACT_TYPE, INDEX_MEDIA_TYPE } from './index-artifact.js';

/** An OCI content descriptor (the fields the index artifact uses; the registry client's descriptors fit). */
export interface IndexArtifactDescriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly artifactType?: string;
}

/** Annotation on each index blob naming the layer it indexes. */
export const INDEX_LAYER_DIGEST_ANNOTATION = 'dev.imgstream.index.layer.digest';
/** Annotation on each index blob naming its format (`zran` or `raw`). */
export const INDEX_FORMAT_ANNOTATION = 'dev.imgstream.index.format';
const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256Digest('{}'), size: 2 } as const;
const MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';

/** One serialised layer index to carry in the artifact. */
export interface IndexArtifactLayer {
  layerDigest: Digest;
  format: 'zran' | 'raw';
  /** The serialised index (`serialiseIndex`). */
  bytes: Uint8Array;
}

/** What to push: the artifact manifest and the blobs it refers to (config `{}` and one blob per index). */
export interface IndexArtifact {
  readonly manifest: Uint8Array;
  readonly manifestDescriptor: IndexArtifactDescriptor;
  readonly blobs: ReadonlyArray<{ descriptor: IndexArtifactDescriptor; bytes: Uint8Array }>;
}

/**
 * Builds the OCI 1.1 artifact that carries the indexes of one image manifest's layers: an image
 * manifest with `artifactType` {@link INDEX_ARTIFACT_TYPE}, the empty config, one layer per index
 * blob (annotated with the layer digest and format) and `subject` = the image manifest, so it is
 * found through the referrers API (or the `sha256-<hex>` tag schema fallback).
 */
export function buildIndexArtifact(subject: IndexArtifactDescriptor, layers: readonly IndexArtifactLayer[]): IndexArtifact {
  const sorted = [...layers].sort((a, b) => (a.layerDigest < b.layerDigest ? -1 : a.layerDigest > b.layerDigest ? 1 : 0));
  const blobs = sorted.map((l) => ({
    descriptor: {
      mediaType: INDEX_MEDIA_TYPE,
      digest: sha256Digest(l.bytes),
      size: l.bytes.byteLength,
      annotations: { [INDEX_LAYER_DIGEST_ANNOTATION]: l.layerDigest, [INDEX_FORMAT_ANNOTATION]: l.format },
    },
    bytes: l.bytes,
  }));
  const manifestJson = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: INDEX_ARTIFACT_TYPE,
    config: EMPTY_CONFIG,
    layers: blobs.map((b) => b.descriptor),
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { 'org.opencontainers.image.created': '1970-01-01T00:00:00Z' },
  };
  const manifest = new TextEncoder().encode(JSON.stringify(manifestJson));
  return {
    manifest,
    manifestDescriptor: { mediaType: MANIFEST_MEDIA_TYPE, digest: sha256Digest(manifest), size: manifest.byteLength, artifactType: INDEX_ARTIFACT_TYPE },
    blobs: [{ descriptor: EMPTY_CONFIG, bytes: new TextEncoder().encode('{}') }, ...blobs],
  };
}

/** The tag under which registries without the referrers API list referrers of `subject` (OCI 1.1 tag schema). */
export function referrersFallbackTag(subject: Digest): string {
  return `sha256-${subject.slice('sha256:'.length)}`;
}

function bad(message: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.INVALID_MANIFEST, `imgstream index artifact: ${message}`);
}

/**
 * Parses an index artifact manifest; returns, per layer digest, the descriptor of its index blob.
 * When `subject` is given the artifact must refer to it.
 */
export function parseIndexArtifact(manifest: Uint8Array, subject?: Digest): Map<Digest, IndexArtifactDescriptor & { format: 'zran' | 'raw' }> {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(new TextDecoder().decode(manifest)) as Record<string, unknown>;
  } catch (err) {
    throw new ImgstreamError(ErrorCode.INVALID_MANIFEST, 'imgstream index artifact: not JSON', { cause: err });
  }
  if (typeof m !== 'object' || m === null || m.schemaVersion !== 2 || m.artifactType !== INDEX_ARTIFACT_TYPE) throw bad('not an imgstream index artifact');
  const subj = m.subject as Record<string, unknown> | undefined;
  if (subj === undefined || !isDigest(subj.digest)) throw bad('no subject');
  if (subject !== undefined && subj.digest !== subject) throw bad(`refers to ${String(subj.digest)}, not ${subject}`);
  if (!Array.isArray(m.layers)) throw bad('no layers');
  const out = new Map<Digest, IndexArtifactDescriptor & { format: 'zran' | 'raw' }>();
  for (const l of m.layers as Array<Record<string, unknown>>) {
    const ann = (l.annotations ?? {}) as Record<string, unknown>;
    const layerDigest = ann[INDEX_LAYER_DIGEST_ANNOTATION];
    const format = ann[INDEX_FORMAT_ANNOTATION];
    if (l.mediaType !== INDEX_MEDIA_TYPE || !isDigest(l.digest) || typeof l.size !== 'number' || !Number.isSafeInteger(l.size) || l.size < 0) throw bad('malformed layer descriptor');
    if (!isDigest(layerDigest) || (format !== 'zran' && format !== 'raw')) throw bad('layer descriptor without layer digest or format');
    if (out.has(layerDigest)) throw bad(`two indexes for ${layerDigest}`);
    out.set(layerDigest, { mediaType: l.mediaType, digest: l.digest, size: l.size, annotations: ann as Record<string, string>, format });
  }
  return out;
}
