// The public surface of @imgstream/core: named re-exports only.
export { ErrorCode, ImgstreamError, invalidOption, isImgstreamError } from './errors.js';
export type { ImgstreamErrorFields, ImgstreamErrorOptions } from './errors.js';
export { Digester, isDigest, parseDigest, sha256Digest, verifyDigest } from './digest.js';
export type { Digest } from './digest.js';
export type { RangeReader } from './blob.js';
export { channel, publish } from './diagnostics.js';
export { abortable } from './abortable.js';
export { defaults } from './defaults.js';
export type { Defaults } from './defaults.js';
export {
  parseReference,
  formatReference,
  withDigest,
  withTag,
  registryEndpointHost,
  isLoopbackHost,
  DOCKER_HUB_REGISTRY,
  DOCKER_HUB_ENDPOINT,
} from './registry/reference.js';
export type { ImageReference } from './registry/reference.js';
export { MediaType, MANIFEST_MEDIA_TYPES, INDEX_MEDIA_TYPES } from './registry/media-types.js';
export { parseManifest, parseDescriptor, selectPlatform } from './registry/manifest.js';
export type { Descriptor, ImageManifest, ImageIndex, ManifestDocument } from './registry/manifest.js';
export { hostPlatform, parsePlatform, formatPlatform, normalizePlatform, platformFromNode, platformScore } from './registry/platform.js';
export type { Platform } from './registry/platform.js';
export { parseWwwAuthenticate } from './registry/www-authenticate.js';
export type { AuthChallenge } from './registry/www-authenticate.js';
export { DockerConfigCredentials, staticCredentials, chainCredentials, runCredentialHelper } from './registry/credentials.js';
export type { Credential, CredentialProvider, DockerConfigCredentialsOptions } from './registry/credentials.js';
export { RegistryClient, isIndexMediaType } from './registry/client.js';
export type {
  RegistryClientOptions,
  RegistryMirror,
  CallOptions,
  FetchedManifest,
  ResolvedImage,
  ResolveImageOptions,
  PushManifestOptions,
  ReferrersOptions,
} from './registry/client.js';
export { RegistryBlobReader } from './registry/blob-reader.js';
export { backoffDelayMs, parseRetryAfterMs } from './registry/retry.js';
export { parseHostsToml, loadHostsDir } from './registry/hosts-toml.js';
export type { HostsConfig } from './registry/hosts-toml.js';
export type { LayerFormat, EntryType, FileEntry, Extent, BlockInfo, LayerIndex } from './index/model.js';
export { fsyncDir, writeFileAtomic } from './cache/atomic-write.js';
export { ContentCache } from './cache/content-cache.js';
export type { ContentCacheOptions } from './cache/content-cache.js';
export { LayerCache } from './cache/layer-cache.js';
export type { LayerCacheOptions, LayerCacheEvents, LayerCacheRepair, LayerRecord } from './cache/layer-cache.js';
export { FetchScheduler } from './fetch/fetch-scheduler.js';
export type { FetchPriority, FetchSchedulerOptions, FetchTicket } from './fetch/fetch-scheduler.js';
export { BlockFetcher } from './fetch/block-fetcher.js';
export type {
  BlockFetcherEvents,
  BlockFetcherOptions,
  BlockReadOptions,
  CacheLookupEvent,
  FetchEvent,
  FetchLayer,
  ReadEvent,
  ReadTarget,
} from './fetch/block-fetcher.js';
export { LayerDownloader } from './download/layer-downloader.js';
export type {
  LayerDownloaderEvents,
  LayerDownloaderOptions,
  LayerDownloadProgress,
  LayerDownloadRequest,
  LayerStreamOpener,
} from './download/layer-downloader.js';
export { unpackLayer } from './download/layer-unpacker.js';
export type { UnpackOptions, UnpackResult } from './download/layer-unpacker.js';
export type { TarEntry, TarEntryHeader, TarEntryType } from './download/tar-entry.js';
export { ImagesInUseStore } from './gc/images-in-use-store.js';
export type { ImageInUse, ImagesInUseStoreEvents, ImagesInUseStoreOptions } from './gc/images-in-use-store.js';
export { GarbageCollector, systemClock } from './gc/garbage-collector.js';
export type { GarbageCollectorEvents, GarbageCollectorOptions, GcClock, GcRunResult } from './gc/garbage-collector.js';
export { BufferRangeReader } from './blob/buffer-range-reader.js';
export { FileRangeReader } from './blob/file-range-reader.js';
export { readTar } from './tar/tar-reader.js';
export type { ReadTarOptions, TarDataRegion, TarEntry as ReadTarEntry } from './tar/tar-reader.js';
export { normalisePath } from './index/file-table.js';
export { buildRawIndex, buildZranIndex } from './index/build-stream-index.js';
export type { BuildIndexOptions } from './index/build-stream-index.js';
export { StreamLayerIndex } from './index/stream-layer-index.js';
export type { StreamBlock, StreamEntry, StreamIndexData } from './index/stream-layer-index.js';
export { INDEX_ARTIFACT_TYPE, INDEX_MEDIA_TYPE, parseIndex, serialiseIndex } from './index/index-artifact.js';
export type { ParseIndexOptions } from './index/index-artifact.js';
export {
  ESTARGZ_FOOTER_BYTES,
  ESTARGZ_TOC_DIGEST_ANNOTATION,
  LEGACY_STARGZ_FOOTER_BYTES,
  openEstargzIndex,
  parseEstargzFooter,
} from './index/estargz-index.js';
export type { OpenEstargzIndexOptions } from './index/estargz-index.js';
export { buildLayerIndex, openLayerIndex } from './index/open-layer-index.js';
export type { BuildLayerIndexOptions, OpenLayerIndexOptions } from './index/open-layer-index.js';
export { readEntryRange } from './index/read-entry.js';
export {
  INDEX_FORMAT_ANNOTATION,
  INDEX_LAYER_DIGEST_ANNOTATION,
  buildIndexArtifact,
  parseIndexArtifact,
  referrersFallbackTag,
} from './index/index-artifact-manifest.js';
export type { IndexArtifact, IndexArtifactLayer, IndexArtifactDescriptor } from './index/index-artifact-manifest.js';
export { indexImage, layerIndexKind, lookupIndexArtifacts, openImageLayers } from './index/image-indexes.js';
export type { IndexArtifactLookup, IndexImageOptions, IndexImageProgress, IndexImageResult, LayerIndexKind, OpenedLayer, OpenImageLayersOptions } from './index/image-indexes.js';
export { MergedTree } from './index/merged-tree.js';
export type { MergedEntry } from './index/merged-tree.js';
export { ImageStreamer } from './service/image-streamer.js';
export type { ImageStreamerEvents, ImageStreamerOptions, LayerRequest, LayerState, StreamedLayer } from './service/image-streamer.js';
export {
  PREFETCH_ARTIFACT_TYPE,
  PREFETCH_REPORT_MEDIA_TYPE,
  PREFETCH_REPORT_VERSION,
  MAX_PREFETCH_REPORT_BYTES,
  buildPrefetchReport,
  checkPrefetchReport,
  landmarkPrefetchReport,
  layerIndexIdentity,
  parsePrefetchReport,
  reportBytes,
  reportLayerOf,
  serialisePrefetchReport,
  MAX_PREFETCH_FILE_RANGES,
  MAX_PREFETCH_ABSENT_PATHS,
  absentPathsByLayer,
  lookedPathsByLayer,
  MAX_PREFETCH_LOOKED_PATHS,
  type PrefetchAbsentPath,
  type PrefetchLookedPath,
  type PrefetchFileRange,
  type PrefetchRange,
  type PrefetchReport,
  type PrefetchReportLayer,
} from './prefetch/prefetch-report.js';
export { buildPrefetchArtifact, fetchPrefetchReport, pushPrefetchReport, type PrefetchArtifact } from './prefetch/prefetch-artifact.js';
export { PrefetchRecorder, type PrefetchRecorderOptions } from './prefetch/prefetch-recorder.js';
export { PrefetchReplay, type PrefetchReplayOptions, type PrefetchReplayResult } from './prefetch/prefetch-replay.js';
export { PrefetchWarmupPlan, type FilePiece } from './prefetch/prefetch-warmup.js';
export {
  buildPrefetchPack,
  packMemberRanges,
  packPrefetchReport,
  packRangesOf,
  packRequests,
  PackReadAhead,
  packWarmupPieces,
  reportPackRanges,
  replayPrefetchPack,
  MAX_PREFETCH_PACK_BYTES,
  PREFETCH_PACK_LAYOUT,
  PREFETCH_PACK_MEDIA_TYPE,
  type BuildPrefetchPackOptions,
  type PackFileRange,
  type PackLayout,
  type PackReplayOptions,
  type PackRequest,
  type PrefetchPackDescriptor,
  type PrefetchPackMember,
  type PrefetchPackResult,
} from './prefetch/prefetch-pack.js';
export { PrefetchPackReplay, type PrefetchPackReplayOptions, type PrefetchPackReplayResult } from './prefetch/prefetch-pack-replay.js';
export { PinnedFileRanges, type PinnedRange } from './fetch/pinned-file-ranges.js';
export { PrefetchReportStore, type PrefetchReportStoreOptions } from './prefetch/prefetch-report-store.js';
export { ImagePrefetcher, type ImagePrefetcherEvents, type ImagePrefetcherOptions, type PrefetchReportSource, type PrefetchStart } from './service/image-prefetcher.js';
