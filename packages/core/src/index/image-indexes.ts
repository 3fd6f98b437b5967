import type { Digest } from '../digest.js';
import { ErrorCode, ImgstreamError, isImgstreamError } from '../errors.js';
import type { RegistryClient, ResolvedImage } from '../registry/client.js';
import type { Descriptor } from '../registry/manifest.js';
import { MediaType } from '../registry/media-types.js';
import type { ImageReference } from '../registry/reference.js';
import type { Platform } from '../registry/platform.js';
import { buildRawIndex, buildZranIndex } from './build-stream-index.js';
import { ESTARGZ_TOC_DIGEST_ANNOTATION } from './estargz-index.js';
import { INDEX_ARTIFACT_TYPE, serialiseIndex } from './index-artifact.js';
import { buildIndexArtifact, parseIndexArtifact, type IndexArtifactLayer } from './index-artifact-manifest.js';
import type { LayerIndex } from './model.js';
import { openLayerIndex } from './open-layer-index.js';

/** How a layer is made seekable. */
export type LayerIndexKind = 'estargz' | 'zran' | 'raw' | 'unsupported';

/** The kind of index a layer descriptor calls for. */
export function layerIndexKind(layer: Pick<Descriptor, 'mediaType' | 'annotations'>): LayerIndexKind {
  if (layer.annotations?.[ESTARGZ_TOC_DIGEST_ANNOTATION] !== undefined) return 'estargz';
  if (layer.mediaType === MediaType.OCI_LAYER_GZIP || layer.mediaType === MediaType.DOCKER_LAYER_GZIP) return 'zran';
  if (layer.mediaType === MediaType.OCI_LAYER || layer.mediaType === 'application/vnd.docker.image.rootfs.diff.tar') return 'raw';
  return 'unsupported';
}

/** Progress of {@link indexImage}, per layer. */
export interface IndexImageProgress {
  layer: number;
  digest: Digest;
  kind: LayerIndexKind;
  state: 'start' | 'done' | 'skipped';
  /** Compressed bytes read so far (state 'start' reports repeatedly while reading). */
  bytesRead: number;
  size: number;
  indexBytes?: number;
}

/** Options of {@link indexImage}. */
export interface IndexImageOptions {
  platform?: Platform;
  /** zran span / raw block size in bytes. Default `defaults.index.zranSpanBytes` / `rawBlockBytes`. */
  spanBytes?: number;
  /** Layers indexed at the same time. Default 3. */
  concurrency?: number;
  onProgress?: (p: IndexImageProgress) => void;
  signal?: AbortSignal;
}

/** What {@link indexImage} did. */
export interface IndexImageResult {
  image: ResolvedImage;
  /** The artifact's manifest digest, or undefined when no layer needed an index. */
  artifactDigest: Digest | undefined;
  /** True when the same artifact already referred to the image (nothing was pushed). */
  alreadyIndexed: boolean;
  layers: Array<{ digest: Digest; kind: LayerIndexKind; indexBytes?: number }>;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  });
  await Promise.all(workers);
  return out;
}

/**
 * Builds a zran (gzip) or raw (uncompressed) index for every layer of one platform of an image
 * that needs one (eStargz layers carry their own), and pushes them as one OCI artifact whose
 * `subject` is the platform's manifest. Idempotent: the artifact is deterministic, and when it
 * already refers to the image nothing is pushed.
 */
export async function indexImage(client: RegistryClient, ref: ImageReference, options: IndexImageOptions = {}): Promise<IndexImageResult> {
  const call = options.signal !== undefined ? { signal: options.signal } : {};
  const image = await client.resolveImage(ref, { ...call, ...(options.platform !== undefined ? { platform: options.platform } : {}) });
  const layers = image.manifest.layers;
  const built = await mapLimit(layers, options.concurrency ?? 3, async (layer, i): Promise<IndexArtifactLayer | undefined> => {
    const kind = layerIndexKind(layer);
    const progress = (state: IndexImageProgress['state'], bytesRead: number, indexBytes?: number) =>
      options.onProgress?.({ layer: i, digest: layer.digest, kind, state, bytesRead, size: layer.size, ...(indexBytes !== undefined ? { indexBytes } : {}) });
    // a layer that occurs twice in the image is indexed once (the artifact holds one index per digest)
    if ((kind !== 'zran' && kind !== 'raw') || layers.findIndex((l) => l.digest === layer.digest) !== i) {
      progress('skipped', 0);
      return undefined;
    }
    progress('start', 0);
    let read = 0;
    const stream = client.blobStream(ref, layer, call);
    async function* counted(): AsyncGenerator<Uint8Array> {
      try {
        for await (const chunk of stream as AsyncIterable<Uint8Array>) {
          read += chunk.byteLength;
          progress('start', read);
          yield chunk;
        }
      } finally {
        stream.destroy();
      }
    }
    const buildOptions = { expectedDigest: layer.digest, ...call, ...(options.spanBytes !== undefined ? { spanBytes: options.spanBytes } : {}) };
    const index = kind === 'zran' ? await buildZranIndex(counted(), buildOptions) : await buildRawIndex(counted(), buildOptions);
    const bytes = serialiseIndex(index.data);
    progress('done', read, bytes.byteLength);
    return { layerDigest: layer.digest, format: kind, bytes };
  });
  const indexed = built.filter((b): b is IndexArtifactLayer => b !== undefined);
  const summary = layers.map((l) => {
    const own = built[layers.findIndex((o) => o.digest === l.digest)];
    return { digest: l.digest, kind: layerIndexKind(l), ...(own !== undefined ? { indexBytes: own.bytes.byteLength } : {}) };
  });
  if (indexed.length === 0) return { image, artifactDigest: undefined, alreadyIndexed: false, layers: summary };
  const artifact = buildIndexArtifact({ mediaType: image.mediaType, digest: image.digest, size: image.manifestBytes.byteLength }, indexed);
  const existing = await client.referrers(ref, image.digest, { ...call, artifactType: INDEX_ARTIFACT_TYPE });
  if (existing.some((d) => d.digest === artifact.manifestDescriptor.digest)) {
    return { image, artifactDigest: artifact.manifestDescriptor.digest, alreadyIndexed: true, layers: summary };
  }
  for (const blob of artifact.blobs) await client.pushBlob(ref, blob.bytes, { ...call, mediaType: blob.descriptor.mediaType });
  await client.pushManifest(ref, artifact.manifest, { ...call, tag: artifact.manifestDescriptor.digest, mediaType: artifact.manifestDescriptor.mediaType });
  return { image, artifactDigest: artifact.manifestDescriptor.digest, alreadyIndexed: false, layers: summary };
}

/** One layer of an image opened for random access (or why it cannot be). */
export interface OpenedLayer {
  descriptor: Descriptor;
  index?: LayerIndex;
  /** Set when the layer is not streamable (IMGSTREAM_NOT_STREAMABLE or another coded error). */
  error?: ImgstreamError;
  /** Reads the layer blob with HTTP Range requests. */
  reader: ReturnType<RegistryClient['blobReader']>;
}

/** A layer's imgstream index: the index blob and the artifact that lists it. */
interface IndexArtifactBlob {
  digest: Digest;
  size: number;
  artifact: Digest;
}

/** Where the imgstream index of each layer is: layer digest -> its index blob. */
export type IndexArtifactLookup = ReadonlyMap<Digest, IndexArtifactBlob>;

/**
 * Finds the imgstream index artifacts that refer to a manifest (referrers API or tag-schema
 * fallback) and reads which index blob each layer has. Needs only the manifest digest, so it can
 * run while the image's config is fetched. The artifacts' manifests are fetched in parallel; where
 * two artifacts index the same layer, the first one listed wins.
 */
export async function lookupIndexArtifacts(client: RegistryClient, ref: ImageReference, manifestDigest: Digest, options: { signal?: AbortSignal } = {}): Promise<IndexArtifactLookup> {
  const call = options.signal !== undefined ? { signal: options.signal } : {};
  const artifacts = await client.referrers(ref, manifestDigest, { ...call, artifactType: INDEX_ARTIFACT_TYPE });
  const manifests = await Promise.all(artifacts.map((a) => client.getManifest({ ...ref, digest: a.digest }, { ...call, digest: a.digest })));
  const available = new Map<Digest, IndexArtifactBlob>();
  manifests.forEach((m, i) => {
    for (const [layer, d] of parseIndexArtifact(m.bytes, manifestDigest)) if (!available.has(layer)) available.set(layer, { digest: d.digest, size: d.size, artifact: artifacts[i]!.digest });
  });
  return available;
}

/** Options of {@link openImageLayers}. */
export interface OpenImageLayersOptions {
  signal?: AbortSignal;
  /**
   * The image's index artifacts, when a {@link lookupIndexArtifacts} of its manifest digest was
   * started earlier (e.g. from `resolveImage`'s `onManifest`). Default: looked up here.
   */
  indexArtifacts?: IndexArtifactLookup | Promise<IndexArtifactLookup>;
}

/**
 * Opens the seekable index of every layer of a resolved image: eStargz layers through their TOC,
 * other layers through the imgstream index artifact that refers to the image (referrers API or
 * tag-schema fallback). Layers without an index get an `error` instead of an `index`.
 */
export async function openImageLayers(client: RegistryClient, ref: ImageReference, image: ResolvedImage, options: OpenImageLayersOptions = {}): Promise<OpenedLayer[]> {
  const call = options.signal !== undefined ? { signal: options.signal } : {};
  const available = await (options.indexArtifacts ?? lookupIndexArtifacts(client, ref, image.digest, call));
  return Promise.all(
    image.manifest.layers.map(async (descriptor): Promise<OpenedLayer> => {
      const reader = client.blobReader(ref, descriptor);
      const found = available.get(descriptor.digest);
      try {
        const serialisedIndex = found !== undefined ? new Uint8Array(await client.fetchBlob(ref, { digest: found.digest, size: found.size }, call)) : undefined;
        if (serialisedIndex === undefined && layerIndexKind(descriptor) !== 'estargz' && descriptor.mediaType !== MediaType.OCI_LAYER_GZIP && descriptor.mediaType !== MediaType.DOCKER_LAYER_GZIP) {
          throw new ImgstreamError(ErrorCode.NOT_STREAMABLE, `layer ${descriptor.digest} (${descriptor.mediaType}) has no index`, { digest: descriptor.digest });
        }
        const index = await openLayerIndex(reader, {
          layerDigest: descriptor.digest,
          ...(serialisedIndex !== undefined ? { serialisedIndex } : {}),
          ...(descriptor.annotations !== undefined ? { annotations: descriptor.annotations } : {}),
          ...call,
        });
        return { descriptor, index, reader };
      } catch (err) {
        if (isImgstreamError(err)) return { descriptor, error: err, reader };
        throw err;
      }
    }),
  );
}

