import type { RangeReader } from '../blob.js';
import type { Digest } from '../digest.js';
import { ErrorCode, ImgstreamError, isImgstreamError } from '../errors.js';
import { buildRawIndex, buildZranIndex, type BuildIndexOptions } from './build-stream-index.js';
import { ESTARGZ_TOC_DIGEST_ANNOTATION, openEstargzIndex, type OpenEstargzIndexOptions } from './estargz-index.js';
import { parseIndex, type ParseIndexOptions } from './index-artifact.js';
import type { LayerIndex } from './model.js';
import type { StreamLayerIndex } from './stream-layer-index.js';

/** Options of {@link openLayerIndex}. */
export interface OpenLayerIndexOptions {
  /** Digest of the layer blob. */
  layerDigest: Digest;
  /** A serialised zran/raw index for this layer (from the registry artifact); takes precedence. */
  serialisedIndex?: Uint8Array;
  /** The layer descriptor's annotations (for the eStargz TOC digest). */
  annotations?: Readonly<Record<string, string>>;
  /** Limits for parsing the serialised index or the eStargz TOC. */
  limits?: ParseIndexOptions & Omit<OpenEstargzIndexOptions, 'layerDigest' | 'tocDigest' | 'signal'>;
  signal?: AbortSignal;
}

/**
 * Opens the seekable index of a layer blob: a serialised zran/raw index when given, otherwise the
 * eStargz TOC carried in the blob. A layer without either -> IMGSTREAM_NOT_STREAMABLE.
 */
export async function openLayerIndex(blob: RangeReader, options: OpenLayerIndexOptions): Promise<LayerIndex> {
  if (options.serialisedIndex !== undefined) {
    const index = parseIndex(options.serialisedIndex, { ...options.limits, expectedLayerDigest: options.layerDigest });
    if (index.layerSize !== blob.size) {
      throw new ImgstreamError(ErrorCode.INVALID_INDEX, `index is for a blob of ${index.layerSize} bytes, the blob has ${blob.size}`, { digest: options.layerDigest });
    }
    return index;
  }
  const tocDigest = options.annotations?.[ESTARGZ_TOC_DIGEST_ANNOTATION];
  try {
    return await openEstargzIndex(blob, {
      ...options.limits,
      layerDigest: options.layerDigest,
      ...(tocDigest !== undefined ? { tocDigest: tocDigest as Digest } : {}),
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    });
  } catch (err) {
    // no footer and no TOC annotation: a plain layer without an index
    if (tocDigest === undefined && isImgstreamError(err, ErrorCode.INVALID_INDEX) && /no valid eStargz footer/.test(err.message)) {
      throw new ImgstreamError(ErrorCode.NOT_STREAMABLE, `layer ${options.layerDigest} has no seekable index (not eStargz, no zran/raw index)`, { digest: options.layerDigest, cause: err });
    }
    throw err;
  }
}

/** Options of {@link buildLayerIndex}. */
export interface BuildLayerIndexOptions extends BuildIndexOptions {
  /** How the blob is compressed: 'gzip' builds a zran index, 'none' a raw index. */
  compression: 'gzip' | 'none';
}

/** Builds a zran (gzip) or raw (uncompressed) index from a layer blob stream, in one pass. */
export function buildLayerIndex(blob: AsyncIterable<Uint8Array>, options: BuildLayerIndexOptions): Promise<StreamLayerIndex> {
  const { compression, ...rest } = options;
  return compression === 'gzip' ? buildZranIndex(blob, rest) : buildRawIndex(blob, rest);
}
