/**
 * Every default of @imgstream/core in one place. The values for the streaming engine follow the
 * GKE Image Streaming node daemon's flags (named in each comment) so the same tuning carries over.
 */
export const defaults = Object.freeze({
  /** Content cache bound in bytes: 1 GiB (GKE `max_content_cache_size_mb=1024`). */
  maxContentCacheBytes: 1024 * 1024 * 1024,
  /** Blocks fetched per foreground read round (GKE `max_read_blocks=2`). */
  maxReadBlocks: 2,
  /** Sequential read-ahead window in bytes of file content: 1 MiB (GKE `max_read_ahead`). */
  readAheadBytes: 1024 * 1024,
  /** Range requests in flight at once across all layers. */
  maxConcurrentFetches: 8,
  /** Time limit of one range request in milliseconds. */
  fetchTimeoutMs: 30_000,
  /** Extra attempts for a failed block fetch or download chunk. */
  fetchRetries: 3,
  /** First retry delay in milliseconds; doubles on every attempt. */
  retryBaseDelayMs: 100,
  /** Whole-layer downloads running at once (GKE `max_layer_downloads=3`). */
  maxLayerDownloads: 3,
  /** Size of one range request of a background layer download: 8 MiB. */
  downloadChunkBytes: 8 * 1024 * 1024,
  /** Local layer cache directory (GKE `layer_cache_dir`). */
  layerCacheDir: '/var/lib/imgstream/layers',
  /** Images-in-use database file (GKE `images_in_use_db_path`). */
  imagesInUsePath: '/var/lib/imgstream/images-in-use.json',
  /** Garbage collection period in milliseconds: 3 minutes (GKE `gc_period=3m`). */
  gcPeriodMs: 180_000,
  /** How long a cached layer must stay unreferenced before GC removes it, in milliseconds: 10 minutes. */
  gcGracePeriodMs: 600_000,
});

export type Defaults = typeof defaults;
