// The public surface of @imgstream/core: named re-exports only.
export { ErrorCode, ImgstreamError, isImgstreamError } from './errors.js';
export type { ImgstreamErrorFields, ImgstreamErrorOptions } from './errors.js';
export { Digester, isDigest, parseDigest, sha256Digest, verifyDigest } from './digest.js';
export type { Digest } from './digest.js';
export type { RangeReader } from './blob.js';
export { defaults } from './defaults.js';
export type { Defaults } from './defaults.js';
export type { LayerFormat, EntryType, FileEntry, Extent, BlockInfo, LayerIndex } from './index/model.js';
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
