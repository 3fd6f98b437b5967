/**
 * Every default of @imgstream/core in one frozen object. Options objects document their default by
 * pointing here; constructors resolve options against these values once.
 */
export const defaults = Object.freeze({
  registry: Object.freeze({
    /** Time to wait for response headers of one HTTP request, ms. */
    requestTimeoutMs: 30_000,
    /** Longest pause between two chunks of a response body, ms. */
    bodyIdleTimeoutMs: 30_000,
    /** Time to establish a TCP/TLS connection, ms. */
    connectTimeoutMs: 10_000,
    /** Retries of one request after 5xx, 429, resets or truncated bodies (total attempts = 1 + this). */
    maxRetries: 4,
    /** First backoff delay, ms; doubles on every retry, with jitter. */
    retryBaseDelayMs: 100,
    /** Upper bound of one computed backoff delay, ms. */
    retryMaxDelayMs: 5_000,
    /** Upper bound of a server's `Retry-After`, ms. */
    maxRetryAfterMs: 10_000,
    /** Redirects followed per request. */
    maxRedirects: 5,
    /**
     * How long the storage URL a registry redirected a blob read to is reused for further reads of
     * that blob without asking the registry again, ms (0: never). A reused URL that fails is
     * dropped and the registry asked again, so the value only bounds how stale it may get.
     */
    blobLocationTtlMs: 60_000,
    /** Blobs whose redirect target is remembered at once (oldest dropped first). */
    maxBlobLocations: 1024,
    /** Largest manifest or index accepted, bytes. */
    maxManifestBytes: 4 * 1024 * 1024,
    /** Largest image config blob accepted, bytes. */
    maxConfigBytes: 8 * 1024 * 1024,
    /** Pooled connections per origin. */
    connectionsPerOrigin: 32,
    /** Keep-alive of idle pooled connections, ms. */
    keepAliveTimeoutMs: 60_000,
    /** A token is refreshed this long before it expires, ms. */
    tokenExpiryMarginMs: 5_000,
    /** Lifetime assumed for a token without `expires_in`, ms (the distribution spec's 60 s). */
    defaultTokenLifetimeMs: 60_000,
    /** Largest token or error response body read, bytes. */
    maxSmallBodyBytes: 1024 * 1024,
    /** A mirror that failed is skipped for this long, ms. */
    mirrorCooldownMs: 30_000,
    /** Retries against one mirror before moving on to the next endpoint. */
    mirrorMaxRetries: 1,
    /** Time a credential helper may run, ms. */
    credentialHelperTimeoutMs: 10_000,
    /** `User-Agent` header. */
    userAgent: 'imgstream/0.1.0',
  }),
  /** Layer indexes (eStargz, zran, raw) and the tar reader. See docs/index-format.md. */
  index: Object.freeze({
    /** zran: uncompressed bytes between two checkpoints of a plain gzip layer (measured, see docs/index-format.md). */
    zranSpanBytes: 1 << 20,
    /** raw: size of a block of an uncompressed layer, in bytes. */
    rawBlockBytes: 128 << 10,
    /** Largest uncompressed size a layer may have when it is indexed, in bytes. */
    maxUncompressedLayerBytes: 64 * 2 ** 30,
    /** Largest uncompressed/compressed ratio once `ratioFloorBytes` were produced (decompression bombs). */
    maxCompressionRatio: 250,
    /** Output below which the compression ratio is not enforced, in bytes. */
    ratioFloorBytes: 256 << 20,
    /** Largest compressed eStargz TOC or serialised index accepted, in bytes. */
    maxIndexBytes: 64 << 20,
    /** Largest decompressed eStargz TOC JSON or serialised index accepted, in bytes. */
    maxDecodedIndexBytes: 512 << 20,
    /** Largest number of entries (paths, chunks, blocks) an index may have. */
    maxIndexEntries: 4_000_000,
    /** Largest decoded size of one block of any format (eStargz member, zran span, raw block), in bytes. */
    maxBlockBytes: 64 << 20,
    /** Largest PAX / GNU long-name extension payload in a tar, in bytes. */
    maxTarExtensionBytes: 1 << 20,
  }),
  fuse: Object.freeze({
    /** Where the imgstream FUSE filesystem is mounted (`layers/`, `images/`). */
    mountPoint: '/run/imgstream/mnt',
    /** How long one FUSE read may wait for its content before it fails with EIO, ms. */
    readTimeoutMs: 30_000,
    /** Largest read the kernel sends in one FUSE request, bytes (libfuse2 caps it at 128 KiB). */
    maxReadBytes: 128 * 1024,
    /** Kernel read-ahead window on the FUSE mount, bytes. */
    maxReadaheadBytes: 1024 * 1024,
    /** How long the kernel may cache attributes and directory entries of the (immutable) layers, ms. */
    cacheTimeoutMs: 3_600_000,
    /** How long the kernel may cache a lookup that found nothing, ms (0: not cached; see `ImgstreamFsOptions.negativeTimeoutMs`). */
    negativeTimeoutMs: 0,
    /** How long mount() waits for an existing mount at the mount point to answer before treating it as stale, ms. */
    staleCheckTimeoutMs: 5_000,
    /** Files a page-cache warm-up reads at once (each file's ranges in order). */
    pageCacheReaders: 4,
  }),
  snapshotter: Object.freeze({
    /** Where the snapshotter keeps its metadata file and snapshot directories. */
    rootDir: '/var/lib/imgstream/snapshotter',
    /** How many snapshot infos one List response message carries. */
    listBatchSize: 100,
    /** How long close() waits for in-flight RPCs before cancelling them, in ms. */
    closeGraceMs: 5_000,
  }),
  /** The streaming engine; values follow the GKE Image Streaming node daemon's flags named in each comment. */
  engine: Object.freeze({
    /** Content cache bound in bytes: 1 GiB (GKE `max_content_cache_size_mb=1024`). */
    maxContentCacheBytes: 1024 * 1024 * 1024,
    /** Blocks fetched per foreground read round (GKE `max_read_blocks=2`). */
    maxReadBlocks: 2,
    /** Sequential read-ahead window in bytes of file content: 1 MiB (GKE `max_read_ahead`). */
    readAheadBytes: 1024 * 1024,
    /** After a foreground miss, decoded bytes of the following blocks of the layer fetched too (Nydus `amplify_io`): 4 MiB. */
    layerReadAheadBytes: 4 * 1024 * 1024,
    /** After a foreground miss, decoded bytes of the preceding blocks of the layer fetched too: 1 MiB. */
    layerReadBehindBytes: 1024 * 1024,
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
    /**
     * Background download requests wait until no on-demand or prefetch request has run for this
     * long, in ms (stargz-snapshotter's background-fetch silence period, 3 s): a starting container
     * does not share bandwidth, CPU and the FUSE server's event loop with downloads.
     */
    downloadSilenceMs: 3_000,
    /** A background request starts after waiting this long for silence anyway, in ms (one at a time while reads run). */
    downloadMaxDeferMs: 15_000,
    /** Size of one range request of a background layer download: 8 MiB. */
    downloadChunkBytes: 8 * 1024 * 1024,
    /**
     * Layer downloads gunzip, hash, parse and unpack in a worker thread, off the event loop that
     * answers FUSE reads (`LayerDownloaderOptions.unpackInWorker`).
     */
    unpackInWorker: true,
    /** Local layer cache directory (GKE `layer_cache_dir`). */
    layerCacheDir: '/var/lib/imgstream/layers',
    /** Images-in-use database file (GKE `images_in_use_db_path`). */
    imagesInUsePath: '/var/lib/imgstream/images-in-use.json',
    /** Garbage collection period in milliseconds: 3 minutes (GKE `gc_period=3m`). */
    gcPeriodMs: 180_000,
    /** How long a cached layer must stay unreferenced before GC removes it, in milliseconds: 10 minutes. */
    gcGracePeriodMs: 600_000,
  }),
  /** Prefetch: recording an image's start-up working set and fetching it first (docs/prefetch.md). */
  prefetch: Object.freeze({
    /** Recording stops when no block was read for this long, ms. */
    quietMs: 3_000,
    /** Recording stops after this long at the latest, ms. */
    recordMaxMs: 60_000,
    /** Largest amount of decoded block bytes one replay fetches: 256 MiB. */
    budgetBytes: 256 * 1024 * 1024,
    /** Longest time container creation waits for the first prefetch batch, ms. */
    waitMs: 1_000,
    /**
     * Prefetch batches fetched at once (after the first, which goes alone). 4: with 2, a replay's
     * range requests leave the link idle between batches; prefetched node-app starts took ~1.2 s
     * longer (docs/benchmarks.md, "Prefetch", sixth run).
     */
    parallelBatches: 4,
    /** Decoded bytes in one batch (one or a few merged range requests): 8 MiB. */
    batchBytes: 8 * 1024 * 1024,
    /** Unlisted blocks between two listed ones of a batch are fetched too when their compressed bytes are at most this (one request instead of two): 512 KiB. */
    maxGapBytes: 512 * 1024,
    /** Directory where a node keeps its reports. */
    reportDir: '/var/lib/imgstream/prefetch',
  }),
});

export type Defaults = typeof defaults;
