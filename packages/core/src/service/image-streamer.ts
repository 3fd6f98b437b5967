import { EventEmitter } from 'eventemitter3';
import { LayerCache } from '../cache/layer-cache.js';
import { defaults } from '../defaults.js';
import { channel, publish } from '../diagnostics.js';
import { isDigest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError, invalidOption, isImgstreamError } from '../errors.js';
import { BlockFetcher, type CacheLookupEvent, type FetchEvent, type FetchLayer } from '../fetch/block-fetcher.js';
import { FetchScheduler } from '../fetch/fetch-scheduler.js';
import { delay } from '../fetch/delay.js';
import { LayerDownloader } from '../download/layer-downloader.js';
import { GarbageCollector, type GcClock, type GcRunResult } from '../gc/garbage-collector.js';
import { ImagesInUseStore } from '../gc/images-in-use-store.js';
import { lookupIndexArtifacts, openImageLayers, type IndexArtifactLookup, type OpenedLayer } from '../index/image-indexes.js';
import type { LayerFormat } from '../index/model.js';
import type { RegistryClient, ResolvedImage } from '../registry/client.js';
import { formatReference, parseReference, withDigest } from '../registry/reference.js';

/** Options of {@link ImageStreamer}. */
export interface ImageStreamerOptions {
  /** The registry client layers are read through (credentials, mirrors, plain HTTP are set there). Required. */
  registry: RegistryClient;
  /** Directory of the local layer cache. Default `defaults.engine.layerCacheDir`. */
  layerCacheDir?: string;
  /** Bound of the in-memory content cache in bytes. Default `defaults.engine.maxContentCacheBytes` (1 GiB). Warning: may all be resident. */
  maxContentCacheBytes?: number;
  /** Blocks fetched per foreground read round. Default `defaults.engine.maxReadBlocks` (2). */
  maxReadBlocks?: number;
  /** Sequential read-ahead in bytes. Default `defaults.engine.readAheadBytes` (1 MiB). */
  readAheadBytes?: number;
  /** Decoded bytes of the following blocks of a layer fetched with a foreground miss. Default `defaults.engine.layerReadAheadBytes` (4 MiB). */
  layerReadAheadBytes?: number;
  /** Decoded bytes of the preceding blocks of a layer fetched with a foreground miss. Default `defaults.engine.layerReadBehindBytes` (1 MiB). */
  layerReadBehindBytes?: number;
  /** Range requests in flight across reads and downloads. Default `defaults.engine.maxConcurrentFetches` (8). */
  maxConcurrentFetches?: number;
  /** Whole-layer background downloads at once. Default `defaults.engine.maxLayerDownloads` (3). */
  maxLayerDownloads?: number;
  /**
   * Gunzip, hash, parse and unpack layer downloads in a worker thread, off the event loop that
   * serves reads. Default `defaults.engine.unpackInWorker` (true).
   */
  unpackInWorker?: boolean;
  /** Download every streamed layer in the background into the local layer cache. Default true. */
  backgroundDownloads?: boolean;
  /**
   * Background download requests wait until no on-demand or prefetch request has run for this long,
   * in ms (0: downloads run alongside reads, one request at a time while reads wait). Default
   * `defaults.engine.downloadSilenceMs` (3000, stargz-snapshotter's background-fetch silence period).
   */
  downloadSilenceMs?: number;
  /** A download request that waited this long for silence starts anyway, in ms. Default `defaults.engine.downloadMaxDeferMs` (15 000). */
  downloadMaxDeferMs?: number;
  /** The images-in-use database file. Default `defaults.engine.imagesInUsePath`. */
  imagesInUsePath?: string;
  /** Garbage collection period in ms. Default `defaults.engine.gcPeriodMs` (3 min). */
  gcPeriodMs?: number;
  /** Time an unreferenced layer is kept before GC removes it, ms. Default `defaults.engine.gcGracePeriodMs` (10 min). */
  gcGracePeriodMs?: number;
  /** Clock of the garbage collector (tests). Default: the system clock. */
  gcClock?: GcClock;
}

/** A layer to stream: which image it belongs to and its digest. */
export interface LayerRequest {
  /** The image reference, e.g. `registry.example/app:1` (a digest in it is honoured). */
  readonly imageRef: string;
  /** The platform manifest the layer belongs to; resolved from `imageRef` when absent. */
  readonly manifestDigest?: string;
  readonly layerDigest: string;
}

/** An opened (streamable) layer. */
export interface StreamedLayer extends FetchLayer {
  readonly digest: Digest;
  readonly format: LayerFormat;
  readonly imageRef: string;
  readonly manifestDigest: Digest;
  /** The key the image is recorded under in the images-in-use database: `imageRef@manifestDigest`. */
  readonly imageKey: string;
  /** Every layer of the image, bottom first. */
  readonly imageLayers: readonly Digest[];
}

/** Where a layer stands. */
export interface LayerState {
  readonly digest: Digest;
  /** Opened for streaming in this process. */
  readonly streamed: boolean;
  /** Complete in the local layer cache. */
  readonly complete: boolean;
  /** The local cache directory once complete. */
  readonly localDir?: string;
}

/** What an {@link ImageStreamer} emits. */
export interface ImageStreamerEvents {
  /** An image's manifest was resolved (once per resolution), before its config and its layers' indexes are fetched. */
  'image-resolved': (event: { imageRef: string; manifestDigest: Digest }) => void;
  /** A layer is streamable and was opened (once per layer). */
  'layer-streamed': (event: { imageRef: string; manifestDigest: Digest; layerDigest: Digest; format: LayerFormat; files: number }) => void;
  /** A layer is not streamable: containerd must download it (per-layer fallback). */
  'layer-fallback': (event: { imageRef: string; layerDigest: string; code: string; reason: string }) => void;
  /** A layer finished downloading into the local layer cache. */
  'layer-complete': (event: { layerDigest: Digest; dir: string; bytes: number; durationMs: number }) => void;
  /** A background download failed (reads keep streaming). */
  'download-failed': (event: { layerDigest: Digest; error: unknown }) => void;
  /** Bytes downloaded in the background since the previous event of this layer. */
  'download-bytes': (event: { layerDigest: Digest; bytes: number }) => void;
  /** One range request of a read (on demand or read-ahead). */
  fetch: (event: FetchEvent) => void;
  /** One content cache lookup. */
  cache: (event: CacheLookupEvent) => void;
  /** A garbage collection run. */
  gc: (result: GcRunResult) => void;
  error: (err: unknown) => void;
}

/** How long the layers of an image named by tag (no manifest digest) are reused before resolving the tag again. */
const TAG_TTL_MS = 60_000;

const diag = {
  streamed: channel('core:layer-streamed'),
  fallback: channel('core:layer-fallback'),
};

/**
 * The streaming service of a node: decides whether a layer is streamable (eStargz TOC, or a zran
 * / raw index artifact), opens it for random access over one shared block fetcher and content
 * cache, downloads it in the background into the local layer cache (downloads yield to reads
 * through one fetch scheduler), keeps the images-in-use database and runs GC. Composed by the
 * daemon; knows nothing of FUSE or containerd.
 */
export class ImageStreamer extends EventEmitter<ImageStreamerEvents> {
  readonly registry: RegistryClient;
  readonly layerCache: LayerCache;
  readonly scheduler: FetchScheduler;
  readonly fetcher: BlockFetcher;
  readonly downloader: LayerDownloader;
  readonly imagesInUse: ImagesInUseStore;
  readonly gc: GarbageCollector;
  readonly #backgroundDownloads: boolean;
  /** image reference -> its opened layers (references by tag are resolved again after TAG_TTL_MS) */
  readonly #images = new Map<string, { promise: Promise<{ image: ResolvedImage; layers: OpenedLayer[] }>; byTag: boolean; atMs: number }>();
  readonly #layers = new Map<Digest, StreamedLayer>();
  readonly #downloadBytes = new Map<Digest, number>();
  readonly #controller = new AbortController();
  #ready: Promise<void> | undefined;
  #closed = false;

  constructor(options: ImageStreamerOptions) {
    super();
    if (options?.registry === undefined) throw invalidOption('registry', 'is required');
    this.registry = options.registry;
    this.layerCache = new LayerCache({ layerCacheDir: options.layerCacheDir ?? defaults.engine.layerCacheDir });
    this.scheduler = new FetchScheduler({
      maxConcurrentFetches: options.maxConcurrentFetches ?? defaults.engine.maxConcurrentFetches,
      backgroundSilenceMs: options.downloadSilenceMs ?? defaults.engine.downloadSilenceMs,
      backgroundMaxDeferMs: options.downloadMaxDeferMs ?? defaults.engine.downloadMaxDeferMs,
    });
    this.fetcher = new BlockFetcher({
      scheduler: this.scheduler,
      layerCache: this.layerCache,
      maxContentCacheBytes: options.maxContentCacheBytes ?? defaults.engine.maxContentCacheBytes,
      maxReadBlocks: options.maxReadBlocks ?? defaults.engine.maxReadBlocks,
      readAheadBytes: options.readAheadBytes ?? defaults.engine.readAheadBytes,
      layerReadAheadBytes: options.layerReadAheadBytes ?? defaults.engine.layerReadAheadBytes,
      layerReadBehindBytes: options.layerReadBehindBytes ?? defaults.engine.layerReadBehindBytes,
    });
    this.downloader = new LayerDownloader({
      layerCache: this.layerCache,
      scheduler: this.scheduler,
      maxLayerDownloads: options.maxLayerDownloads ?? defaults.engine.maxLayerDownloads,
      unpackInWorker: options.unpackInWorker ?? defaults.engine.unpackInWorker,
    });
    this.#backgroundDownloads = options.backgroundDownloads ?? true;
    this.imagesInUse = new ImagesInUseStore({ path: options.imagesInUsePath ?? defaults.engine.imagesInUsePath });
    this.gc = new GarbageCollector({
      layerCache: this.layerCache,
      imagesInUse: this.imagesInUse,
      gcPeriodMs: options.gcPeriodMs ?? defaults.engine.gcPeriodMs,
      gcGracePeriodMs: options.gcGracePeriodMs ?? defaults.engine.gcGracePeriodMs,
      ...(options.gcClock !== undefined ? { clock: options.gcClock } : {}),
      isBusy: (layer) => this.downloader.pending.includes(layer),
    });
    this.fetcher.on('fetch', (e) => this.emit('fetch', e));
    this.fetcher.on('cache', (e) => this.emit('cache', e));
    this.gc.on('run', (r) => this.emit('gc', r));
    this.gc.on('error', (err) => this.emit('error', err));
    this.downloader.on('progress', ({ digest, bytes }) => {
      const before = this.#downloadBytes.get(digest) ?? 0;
      this.#downloadBytes.set(digest, bytes);
      if (bytes > before) this.emit('download-bytes', { layerDigest: digest, bytes: bytes - before });
    });
    this.downloader.on('complete', ({ digest, dir, bytes, durationMs }) => {
      this.#downloadBytes.delete(digest);
      this.emit('layer-complete', { layerDigest: digest, dir, bytes, durationMs });
    });
    this.downloader.on('failed', ({ digest, error }) => {
      this.#downloadBytes.delete(digest);
      this.emit('download-failed', { layerDigest: digest, error });
    });
  }

  /** Repairs the layer cache, loads the images-in-use database and starts GC. Idempotent. */
  ready(): Promise<void> {
    this.#ready ??= (async () => {
      await this.layerCache.ready();
      await this.imagesInUse.ready();
      this.gc.start();
    })();
    return this.#ready;
  }

  /**
   * Opens a layer for streaming. Resolves with the layer (index + blob reader) when it is
   * streamable, records its image in the images-in-use database and starts the layer's background
   * download; rejects with a coded error otherwise
   * (IMGSTREAM_NOT_STREAMABLE when the layer has no index) and emits `layer-fallback`.
   */
  async openLayer(request: LayerRequest, options: { signal?: AbortSignal } = {}): Promise<StreamedLayer> {
    this.#checkOpen();
    await this.ready();
    try {
      if (!isDigest(request.layerDigest)) throw new ImgstreamError(ErrorCode.INVALID_DIGEST, `layer digest ${JSON.stringify(request.layerDigest)} is malformed`);
      const { image, layers } = await this.#openImage(request.imageRef, request.manifestDigest, options.signal);
      const imageKey = `${request.imageRef}@${image.digest}`;
      const known = this.#layers.get(request.layerDigest);
      if (known !== undefined) {
        await this.#useOnce(imageKey, image);
        return { ...known, imageRef: request.imageRef, manifestDigest: image.digest, imageKey, imageLayers: image.manifest.layers.map((l) => l.digest) };
      }
      const opened = layers.find((l) => l.descriptor.digest === request.layerDigest);
      if (opened === undefined) {
        throw new ImgstreamError(ErrorCode.NOT_FOUND, `layer ${request.layerDigest} is not a layer of ${request.imageRef}@${image.digest}`, {
          digest: request.layerDigest,
        });
      }
      if (opened.index === undefined) throw opened.error ?? new ImgstreamError(ErrorCode.NOT_STREAMABLE, `layer ${request.layerDigest} has no index`);
      await this.#useOnce(imageKey, image);
      const again = this.#layers.get(request.layerDigest);
      if (again !== undefined) return { ...again, imageRef: request.imageRef, manifestDigest: image.digest, imageKey };
      const layer: StreamedLayer = {
        imageKey,
        digest: request.layerDigest,
        index: opened.index,
        reader: opened.reader,
        format: opened.index.format,
        imageRef: request.imageRef,
        manifestDigest: image.digest,
        imageLayers: image.manifest.layers.map((l) => l.digest),
      };
      this.#layers.set(layer.digest, layer);
      const event = { imageRef: request.imageRef, manifestDigest: image.digest, layerDigest: layer.digest, format: layer.format, files: opened.index.entries.size };
      publish(diag.streamed, event);
      this.emit('layer-streamed', event);
      if (this.#backgroundDownloads) this.#download(layer, image, opened);
      return layer;
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const coded = isImgstreamError(err) ? err : new ImgstreamError(ErrorCode.NOT_STREAMABLE, String((err as Error)?.message ?? err), { cause: err });
      const event = { imageRef: request.imageRef, layerDigest: request.layerDigest, code: coded.code, reason: coded.message };
      publish(diag.fallback, event);
      this.emit('layer-fallback', event);
      throw coded;
    }
  }

  /**
   * Resolves an image (by `manifestDigest` when given) and opens its layers' indexes, as
   * {@link openLayer} does, sharing that work with it: the manifest digest and the layer digests.
   */
  async imageLayers(imageRef: string, manifestDigest?: string, options: { signal?: AbortSignal } = {}): Promise<{ manifestDigest: Digest; layers: Digest[] }> {
    this.#checkOpen();
    const { image } = await this.#openImage(imageRef, manifestDigest, options.signal);
    return { manifestDigest: image.digest, layers: image.manifest.layers.map((l) => l.digest) };
  }

  /** The state of a layer (synchronous, from memory). */
  layerState(digest: Digest): LayerState {
    const complete = this.layerCache.has(digest);
    return { digest, streamed: this.#layers.has(digest), complete, ...(complete ? { localDir: this.layerCache.dirOf(digest) } : {}) };
  }

  /** An opened layer, if any. */
  layer(digest: Digest): StreamedLayer | undefined {
    return this.#layers.get(digest);
  }

  /** Records an image (any key, e.g. `ref@manifest`) as using these layers: GC keeps them. */
  async useImage(key: string, layers: readonly Digest[]): Promise<void> {
    this.#checkOpen();
    await this.ready();
    await this.imagesInUse.add(key, layers);
  }

  /** Releases an image: its layers may be collected after the grace period unless used elsewhere. */
  async releaseImage(key: string): Promise<boolean> {
    this.#checkOpen();
    await this.ready();
    return this.imagesInUse.remove(key);
  }

  /** Stops GC and downloads, closes the fetcher. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#controller.abort(new ImgstreamError(ErrorCode.CLOSED, 'image streamer closed'));
    await this.gc.close();
    await this.downloader.close();
    this.fetcher.close();
  }

  #openImage(imageRef: string, manifestDigest: string | undefined, signal: AbortSignal | undefined): Promise<{ image: ResolvedImage; layers: OpenedLayer[] }> {
    const parsed = parseReference(imageRef);
    const ref = manifestDigest !== undefined && isDigest(manifestDigest) ? withDigest(parsed, manifestDigest) : parsed;
    const key = formatReference(ref);
    let entry = this.#images.get(key);
    if (entry !== undefined && entry.byTag && Date.now() - entry.atMs > TAG_TTL_MS) entry = undefined;
    if (entry === undefined) {
      // shared by every layer of the image; not bound to one caller's signal
      const call = { signal: this.#controller.signal };
      const promise = (async () => {
        // the index artifacts' (and, through image-resolved, the prefetch report's) round trips
        // need only the manifest digest: they start while the config is fetched
        let indexArtifacts: Promise<IndexArtifactLookup> | undefined;
        const image = await this.registry.resolveImage(ref, {
          ...call,
          onManifest: ({ digest }) => {
            indexArtifacts = lookupIndexArtifacts(this.registry, ref, digest, call);
            // awaited below unless resolveImage fails (then its error is the one reported)
            indexArtifacts.catch(() => undefined);
            this.emit('image-resolved', { imageRef, manifestDigest: digest });
          },
        });
        return { image, layers: await openImageLayers(this.registry, ref, image, { ...call, ...(indexArtifacts !== undefined ? { indexArtifacts } : {}) }) };
      })();
      const created = { promise, byTag: ref.digest === undefined, atMs: Date.now() };
      entry = created;
      this.#images.set(key, created);
      promise.then(
        ({ image }) => {
          // the same image asked for by digest (e.g. the prefetcher, after the snapshotter asked by tag) shares it
          const byDigest = formatReference(withDigest(parsed, image.digest));
          if (created.byTag && !this.#images.has(byDigest)) this.#images.set(byDigest, { promise, byTag: false, atMs: created.atMs });
        },
        () => {
          if (this.#images.get(key) === created) this.#images.delete(key);
        },
      );
    }
    return raceSignal(entry.promise, signal);
  }

  #download(layer: StreamedLayer, image: ResolvedImage, opened: OpenedLayer): void {
    const i = image.manifest.layers.findIndex((l) => l.digest === layer.digest);
    const rootfs = image.config.rootfs as { diff_ids?: unknown } | undefined;
    const diffId = Array.isArray(rootfs?.diff_ids) ? rootfs.diff_ids[i] : undefined;
    const ready = this.layerCache.has(layer.digest) ? Promise.resolve() : this.#whenStartupQuiet(performance.now());
    ready
      .then(() =>
        this.downloader.download(
          { digest: layer.digest, size: opened.descriptor.size, source: opened.reader, ...(typeof diffId === 'string' && isDigest(diffId) ? { diffId } : {}) },
          { signal: this.#controller.signal },
        ),
      )
      .catch(() => undefined); // reported through the downloader's `failed` event
  }

  /**
   * Resolves once the container the layer was opened for has started reading and its reads have
   * then been quiet for `downloadSilenceMs`, or `downloadMaxDeferMs` after `openedMs` at the latest:
   * the gap between a pull and the container's first read is not taken for silence.
   */
  async #whenStartupQuiet(openedMs: number): Promise<void> {
    if (this.scheduler.backgroundSilenceMs === 0) return;
    for (;;) {
      const now = performance.now();
      const deadline = openedMs + this.scheduler.backgroundMaxDeferMs;
      const last = this.scheduler.lastBusyMs;
      if (now >= deadline) return;
      if (!this.scheduler.busy && last > openedMs && now - last >= this.scheduler.backgroundSilenceMs) return;
      const quietAt = last > openedMs && !this.scheduler.busy ? last + this.scheduler.backgroundSilenceMs : now + Math.min(250, this.scheduler.backgroundSilenceMs);
      await delay(Math.max(1, Math.min(deadline, quietAt) - now), this.#controller.signal);
    }
  }

  /** Records the image in use the first time one of its layers is opened. */
  async #useOnce(imageKey: string, image: ResolvedImage): Promise<void> {
    if (this.imagesInUse.images().some((i) => i.key === imageKey)) return;
    await this.imagesInUse.add(imageKey, image.manifest.layers.map((l) => l.digest));
  }

  #checkOpen(): void {
    if (this.#closed) throw new ImgstreamError(ErrorCode.CLOSED, 'image streamer is closed');
  }
}

function raceSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
