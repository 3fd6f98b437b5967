import { EventEmitter } from 'eventemitter3';
import { defaults } from '../defaults.js';
import { channel, publish } from '../diagnostics.js';
import type { Digest } from '../digest.js';
import { ErrorCode, ImgstreamError, invalidOption, isImgstreamError } from '../errors.js';
import type { RangeReader } from '../blob.js';
import type { FetchLayer } from '../fetch/block-fetcher.js';
import type { LayerIndex } from '../index/model.js';
import { fetchPrefetchReport, pushPrefetchReport } from '../prefetch/prefetch-artifact.js';
import { PrefetchRecorder } from '../prefetch/prefetch-recorder.js';
import { absentPathsByLayer, buildPrefetchReport, lookedPathsByLayer, checkPrefetchReport, landmarkPrefetchReport, type PrefetchReport } from '../prefetch/prefetch-report.js';
import { PrefetchReportStore } from '../prefetch/prefetch-report-store.js';
import { PrefetchReplay, type PrefetchReplayResult } from '../prefetch/prefetch-replay.js';
import { packMemberRanges, packPrefetchReport, PackReadAhead, packWarmupPieces, reportPackRanges, type PackFileRange } from '../prefetch/prefetch-pack.js';
import { PrefetchPackReplay, type PrefetchPackReplayResult } from '../prefetch/prefetch-pack-replay.js';
import { PrefetchWarmupPlan, type FilePiece } from '../prefetch/prefetch-warmup.js';
import { parseReference } from '../registry/reference.js';
import type { ImageStreamer, StreamedLayer } from './image-streamer.js';

/** Options of {@link ImagePrefetcher}. */
export interface ImagePrefetcherOptions {
  /** The node's streaming service. Required. */
  streamer: ImageStreamer;
  /** Where reports are kept. Default: a store in `defaults.prefetch.reportDir`. */
  store?: PrefetchReportStore;
  /** Record a report when an image starts without one. Default true. */
  record?: boolean;
  /** Recording stops after this long without block reads, ms. Default `defaults.prefetch.quietMs`. */
  quietMs?: number;
  /** Recording stops after this long at the latest, ms. Default `defaults.prefetch.recordMaxMs`. */
  recordMaxMs?: number;
  /** Most decoded bytes one replay fetches. Default `defaults.prefetch.budgetBytes`. */
  budgetBytes?: number;
  /** Longest time {@link ImagePrefetcher.startImage} waits for the first batch, ms. Default `defaults.prefetch.waitMs`. */
  waitMs?: number;
  /** Batches fetched at once after the first, which goes alone (`PrefetchReplayOptions.parallelBatches`). Default `defaults.prefetch.parallelBatches`. */
  parallelBatches?: number;
  /** Decoded bytes per batch. Default `defaults.prefetch.batchBytes`. */
  batchBytes?: number;
  /** Look for a report artifact in the registry when there is no local report. Default true. */
  registryReports?: boolean;
  /** Push recorded reports to the registry as artifacts referring to the image (needs push rights). Default false. */
  pushReports?: boolean;
  /**
   * Packs: a recorded report gets a pack (the bytes of its file ranges, compressed on their own,
   * stored and pushed beside it), and a replay reads a report's pack instead of fetching its
   * blocks when it can (docs/prefetch.md). Default true.
   */
  packs?: boolean;
}

/** Where a report came from (`estargz-landmark`: the prioritized files of eStargz layers). */
export type PrefetchReportSource = 'local' | 'registry' | 'estargz-landmark';

/** What an {@link ImagePrefetcher} emits. */
export interface ImagePrefetcherEvents {
  /** A report was looked up for an image: found (replayed), missing (recorded), or stale/corrupt (ignored, recorded again). */
  report: (event: { imageRef: string; manifestDigest: Digest; status: 'found' | 'missing' | 'stale'; source?: PrefetchReportSource; reason?: string }) => void;
  /** A replay finished; hits and misses count first foreground reads so far. */
  replayed: (event: { imageRef: string; manifestDigest: Digest; result: PrefetchReplayResult | PrefetchPackReplayResult; hits: number; misses: number }) => void;
  /**
   * File ranges of a replayed report (its `files`) whose blocks are all in the content cache now,
   * in report order: a FUSE server reads them through its mount so the container's first reads
   * hit the page cache (page-cache warm-up).
   */
  'files-loaded': (event: { imageRef: string; manifestDigest: Digest; layerDigest: Digest; pieces: readonly FilePiece[] }) => void;
  /**
   * Paths of a layer that a replayed report says the start-up looked up in vain (its `absent`),
   * in report order: a FUSE server looks them up through a mount that caches negative entries,
   * so the container's own lookups are answered by the kernel. Emitted for each layer that has
   * some when {@link ImagePrefetcher.containerStarting} is called for the image or the replay
   * ends (then after every `files-loaded`, before `replayed`), whichever comes first.
   */
  'absent-paths': (event: { imageRef: string; manifestDigest: Digest; layerDigest: Digest; paths: readonly string[] }) => void;
  /**
   * Paths of a layer that a replayed report says the start-up looked up, found and did not read
   * (its `looked`), in report order: a FUSE server looks them up ahead, so the kernel has their
   * entries when the container's lookups come. Emitted right after the layer's `absent-paths`
   * would be (with or without them).
   */
  'looked-paths': (event: { imageRef: string; manifestDigest: Digest; layerDigest: Digest; paths: readonly string[] }) => void;
  /** Hit/miss counts of a replay, final (reported when the image's recording window ends). */
  'replay-stats': (event: { imageRef: string; manifestDigest: Digest; hits: number; misses: number }) => void;
  /** A report was recorded and stored. */
  recorded: (event: { imageRef: string; manifestDigest: Digest; ranges: number; blocks: number; path: string }) => void;
  /** A recorded report was pushed to the registry. */
  pushed: (event: { imageRef: string; manifestDigest: Digest; artifactDigest: Digest }) => void;
  /** Something failed in the background (never fails a start). */
  error: (err: unknown) => void;
}

/** How an image start went. */
export interface PrefetchStart {
  readonly mode: 'replay' | 'record' | 'none';
  /** Whether the first batch settled within `waitMs` (replay only). */
  readonly firstBatchReady?: boolean;
  /** The replay: of the report's pack when it has one that could be opened, else of its blocks. */
  readonly replay?: PrefetchReplay | PrefetchPackReplay;
  readonly recorder?: PrefetchRecorder;
}

const diag = { report: channel('core:prefetch-report'), replayed: channel('core:prefetch-replayed') };

/**
 * Prefetch of a node: when an image starts, replays its stored prefetch report (fetches the
 * start-up working set first) or, without a valid one, records it. A report that is corrupt or
 * stale is ignored with a `report` event (status `stale`) and never fails a start.
 */
export class ImagePrefetcher extends EventEmitter<ImagePrefetcherEvents> {
  readonly store: PrefetchReportStore;
  readonly #streamer: ImageStreamer;
  readonly #opts: Required<Omit<ImagePrefetcherOptions, 'streamer' | 'store'>>;
  readonly #started = new Map<Digest, Promise<PrefetchStart>>();
  readonly #controller = new AbortController();
  /** Replays still counting hits (and, for packs, holding their ranges). */
  readonly #replays = new Set<PrefetchReplay | PrefetchPackReplay>();
  readonly #pendingStores = new Set<Promise<void>>();
  /** layer digest -> recordings in progress that read it */
  readonly #recording = new Map<Digest, Set<Promise<unknown>>>();
  readonly #recorders = new Set<PrefetchRecorder>();
  /** Replays whose absent and looked-up paths are not handed out yet (manifest digest -> hands them out). */
  readonly #lookupsPending = new Map<Digest, () => void>();
  /** Report lookups started by {@link lookahead}, not taken by a start yet (manifest digest ->). */
  readonly #lookups = new Map<Digest, { found: Promise<FoundReport>; timer: NodeJS.Timeout }>();
  readonly #onResolved = (e: { imageRef: string; manifestDigest: Digest }): void => this.lookahead(e.imageRef, e.manifestDigest);

  constructor(options: ImagePrefetcherOptions) {
    super();
    if (options?.streamer === undefined) throw invalidOption('streamer', 'is required');
    this.#streamer = options.streamer;
    this.store = options.store ?? new PrefetchReportStore();
    const p = defaults.prefetch;
    this.#opts = {
      record: options.record ?? true,
      registryReports: options.registryReports ?? true,
      pushReports: options.pushReports ?? false,
      packs: options.packs ?? true,
      quietMs: options.quietMs ?? p.quietMs,
      recordMaxMs: options.recordMaxMs ?? p.recordMaxMs,
      budgetBytes: options.budgetBytes ?? p.budgetBytes,
      waitMs: options.waitMs ?? p.waitMs,
      parallelBatches: options.parallelBatches ?? p.parallelBatches,
      batchBytes: options.batchBytes ?? p.batchBytes,
    };
    if (!(this.#opts.waitMs >= 0)) throw invalidOption('waitMs', 'must be >= 0');
    this.#streamer.on('image-resolved', this.#onResolved);
  }

  /**
   * Starts prefetch for an image (once per manifest; later calls return the first start): opens
   * its streamable layers, then replays its report, waiting at most `waitMs` for the first batch,
   * or starts recording. Never rejects because of a report.
   */
  startImage(imageRef: string, manifestDigest?: string, options: { signal?: AbortSignal } = {}): Promise<PrefetchStart> {
    return (async () => this.startImageLayers(imageRef, await this.#openLayers(imageRef, manifestDigest, options.signal)))();
  }

  /**
   * Like {@link startImage} for an image whose streamable layers are open already (all of the
   * same manifest): waits at most `waitMs` (replay) and does no registry round trip of its own
   * besides the replay's fetches.
   */
  startImageLayers(imageRef: string, layers: readonly StreamedLayer[]): Promise<PrefetchStart> {
    if (layers.length === 0) return Promise.resolve({ mode: 'none' as const });
    const digest = layers[0]!.manifestDigest;
    let start = this.#started.get(digest);
    if (start === undefined) {
      start = this.#start(imageRef, digest, [...layers]);
      this.#started.set(digest, start);
    }
    return start;
  }

  /**
   * Starts looking for an image's report (the local store, then the registry) before its layers
   * are open: the prefetcher calls it when the streamer has resolved an image's manifest
   * (`image-resolved`), so the report's round trips, and the range requests of a registry
   * report's pack ({@link PackReadAhead}), overlap the fetch and parse of the layers' indexes.
   * The image's start takes what it found (and checks it as usual); without a lookup it looks the
   * report up itself. A lookup that no start takes within `recordMaxMs` is dropped.
   */
  lookahead(imageRef: string, manifestDigest: Digest): void {
    if (this.#controller.signal.aborted || this.#started.has(manifestDigest) || this.#lookups.has(manifestDigest)) return;
    const found = this.#findReport(imageRef, manifestDigest).then((f) => {
      const pack = f.report?.pack;
      if (pack === undefined || f.source !== 'registry' || !this.#opts.packs || this.#controller.signal.aborted) return f;
      // the budget bounds a pack's decoded bytes; the start checks that again against the indexes
      if (pack.members.reduce((n, m) => n + m.decodedSize, 0) > this.#opts.budgetBytes) return f;
      const reader = this.#streamer.registry.blobReader(parseReference(imageRef), { digest: pack.digest, size: pack.size });
      return { ...f, pack: new PackReadAhead(pack, reader, { parallel: this.#opts.parallelBatches, signal: this.#controller.signal }) };
    });
    found.catch(() => undefined); // a start that takes it sees the error
    const timer = setTimeout(() => {
      if (this.#lookups.get(manifestDigest)?.found !== found) return;
      this.#lookups.delete(manifestDigest);
      void found.then((f) => f.pack?.close(), () => undefined);
    }, this.#opts.recordMaxMs);
    timer.unref?.();
    this.#lookups.set(manifestDigest, { found, timer });
  }

  /**
   * When a recording in progress reads this layer: resolves when every such recording stopped.
   * A FUSE server keeps serving the layer through the fetcher until then (reads of a local
   * directory bypass the fetcher and would not be recorded). Undefined when none is.
   */
  whenRecorded(layerDigest: Digest): Promise<void> | undefined {
    const set = this.#recording.get(layerDigest);
    if (set === undefined || set.size === 0) return undefined;
    return Promise.allSettled([...set]).then(() => undefined);
  }

  /**
   * The image's container is being created (a snapshotter asked for its lower directories): the
   * pull is over, so a replay still in progress hands out its report's absent and looked-up paths
   * now (`absent-paths`, `looked-paths`) instead of when it ends, and the lookups come before the
   * container's own.
   */
  containerStarting(manifestDigest: Digest): void {
    this.#lookupsPending.get(manifestDigest)?.();
  }

  /**
   * A lookup of `path` in a layer that the layer does not have (a FUSE server's `onAbsent`):
   * recordings in progress of images with that layer keep it for their report's `absent`.
   */
  noteAbsent(layerDigest: Digest, path: string): void {
    for (const r of this.#recorders) r.noteAbsent(layerDigest, path);
  }

  /**
   * A lookup of `path` in a layer that the layer has (a FUSE server's `onLookup`): recordings in
   * progress of images with that layer keep it for their report's `looked` (unless the start
   * reads it too).
   */
  noteLookup(layerDigest: Digest, path: string): void {
    for (const r of this.#recorders) r.noteLookup(layerDigest, path);
  }

  /**
   * Stops replays in progress, and recordings in progress, storing what they recorded (a report
   * with at least one block). Resolves when those reports are written. Idempotent.
   */
  async close(): Promise<void> {
    this.#controller.abort();
    this.#lookupsPending.clear();
    this.#streamer.off('image-resolved', this.#onResolved);
    for (const { found, timer } of this.#lookups.values()) {
      clearTimeout(timer);
      void found.then((f) => f.pack?.close(), () => undefined);
    }
    this.#lookups.clear();
    // pinned pack ranges are let go now, not when their start-up window ends
    for (const replay of this.#replays) replay.stop();
    await Promise.allSettled([...this.#pendingStores]);
  }

  async #openLayers(imageRef: string, manifestDigest: string | undefined, signal: AbortSignal | undefined): Promise<StreamedLayer[]> {
    const layers: StreamedLayer[] = [];
    const all = await this.#streamer.imageLayers(imageRef, manifestDigest, signal !== undefined ? { signal } : {});
    for (const layerDigest of all.layers) {
      try {
        layers.push(await this.#streamer.openLayer({ imageRef, manifestDigest: all.manifestDigest, layerDigest }, signal !== undefined ? { signal } : {}));
      } catch (err) {
        if (!isImgstreamError(err)) throw err;
      }
    }
    return layers;
  }

  async #start(imageRef: string, manifestDigest: Digest, layers: StreamedLayer[]): Promise<PrefetchStart> {
    const indexes = new Map<Digest, LayerIndex>(layers.map((l) => [l.digest, l.index]));
    let report: PrefetchReport | undefined;
    let source: PrefetchReportSource = 'local';
    let readAhead: PackReadAhead | undefined;
    const lookup = this.#lookups.get(manifestDigest);
    if (lookup !== undefined) {
      clearTimeout(lookup.timer);
      this.#lookups.delete(manifestDigest);
    }
    try {
      const found = await (lookup?.found ?? this.#findReport(imageRef, manifestDigest));
      ({ report, source, pack: readAhead } = found);
      if (report !== undefined) checkPrefetchReport(report, manifestDigest, indexes);
    } catch (err) {
      void readAhead?.close().catch(() => undefined);
      if (!isImgstreamError(err, ErrorCode.INVALID_PREFETCH_REPORT)) this.emit('error', err);
      this.#report({ imageRef, manifestDigest, status: 'stale', source: (err as { source?: PrefetchReportSource }).source ?? source, reason: String((err as Error)?.message ?? err) });
      return this.#record(imageRef, manifestDigest, layers);
    }
    let recorder: PrefetchRecorder | undefined;
    if (report === undefined) {
      // eStargz prioritized files: replay them, and record a real report of this start as well
      report = landmarkPrefetchReport(manifestDigest, layers.map((l) => l.index));
      source = 'estargz-landmark';
      if (report !== undefined) recorder = this.#record(imageRef, manifestDigest, layers).recorder;
    }
    if (report === undefined) {
      this.#report({ imageRef, manifestDigest, status: 'missing' });
      return this.#record(imageRef, manifestDigest, layers);
    }
    this.#report({ imageRef, manifestDigest, status: 'found', source });
    if (source === 'registry') {
      const stored = this.store.put(report).then(
        () => undefined,
        (err: unknown) => void this.emit('error', err),
      );
      this.#pendingStores.add(stored);
      void stored.finally(() => this.#pendingStores.delete(stored));
    }
    const fetchLayers = new Map<Digest, FetchLayer>(layers.map((l) => [l.digest, l]));
    const blockReplay = (of: PrefetchReport): PrefetchReplay => {
      const r = new PrefetchReplay({
        fetcher: this.#streamer.fetcher,
        report: of,
        layers: fetchLayers,
        budgetBytes: this.#opts.budgetBytes,
        parallelBatches: this.#opts.parallelBatches,
        batchBytes: this.#opts.batchBytes,
        signal: this.#controller.signal,
        onLoaded: (layerDigest, blocks) => {
          const pieces = warmup?.loaded(layerDigest, blocks) ?? [];
          if (pieces.length > 0) this.emit('files-loaded', { imageRef, manifestDigest, layerDigest, pieces });
        },
      });
      // built before the replay's first batch can settle (that takes a fetch at least)
      const warmup = of.files !== undefined && of.files.length > 0 ? new PrefetchWarmupPlan(of, indexes, (d, b) => r.fetches(d, b)) : undefined;
      return r;
    };
    const packRanges = this.#packRanges(report, indexes);
    if (packRanges === undefined) void readAhead?.close().catch(() => undefined);
    const packSource = packRanges !== undefined ? (readAhead ?? (await this.#openPack(imageRef, report, source))) : undefined;
    let replay: PrefetchReplay | PrefetchPackReplay;
    // replays of this start that end with its start-up window (a pack's fallback joins later)
    const ended: Array<PrefetchReplay | PrefetchPackReplay> = [];
    if (packSource !== undefined && packRanges !== undefined && report.pack !== undefined) {
      const warmup = packWarmupPieces(packRanges, report.layers.map((l) => l.digest), report.pack.extend, (d, path) => indexes.get(d)?.entries.get(path)?.size);
      const packReplay = new PrefetchPackReplay({
        fetcher: this.#streamer.fetcher,
        pack: report.pack,
        files: packRanges,
        layerDigests: report.layers.map((l) => l.digest),
        reader: packSource,
        parallel: this.#opts.parallelBatches,
        signal: this.#controller.signal,
        onPinned: (layerDigest, pieces) => {
          const warm = warmup(layerDigest, pieces);
          if (warm.length > 0) this.emit('files-loaded', { imageRef, manifestDigest, layerDigest, pieces: warm });
        },
      });
      replay = packReplay;
      void packReplay.done.then((result) => {
        if (result.pack.error === undefined || this.#controller.signal.aborted || !this.#replays.has(packReplay)) return;
        // the blocks of the ranges the pack did not deliver are fetched instead; this replay ends
        // with the pack's start-up window
        this.emit('error', result.pack.error);
        const rest = blocksOfRanges(report, result.pack.missing, indexes);
        if (rest.ranges.length === 0) return;
        const fallback = blockReplay(rest);
        this.#replays.add(fallback);
        ended.push(fallback);
      });
    } else {
      replay = blockReplay(report);
    }
    // the absent and looked-up paths, once the pull is over (the container is starting) or the
    // replay ends: lookups during the pull would compete with it for the FUSE server
    const handOutLookups = (): void => {
      if (this.#lookupsPending.get(manifestDigest) !== handOutLookups) return;
      this.#lookupsPending.delete(manifestDigest);
      for (const [layerDigest, paths] of absentPathsByLayer(report, indexes)) this.emit('absent-paths', { imageRef, manifestDigest, layerDigest, paths });
      for (const [layerDigest, paths] of lookedPathsByLayer(report, indexes)) this.emit('looked-paths', { imageRef, manifestDigest, layerDigest, paths });
    };
    if ((report.absent?.length ?? 0) + (report.looked?.length ?? 0) > 0) this.#lookupsPending.set(manifestDigest, handOutLookups);
    void replay.done.then((result) => {
      handOutLookups();
      const event = { imageRef, manifestDigest, result, hits: replay.hits, misses: replay.misses };
      publish(diag.replayed, event);
      this.emit('replayed', event);
    });
    // count hits and misses over the start-up window, then stop
    this.#replays.add(replay);
    ended.push(replay);
    const window = setTimeout(() => {
      for (const r of ended) {
        this.#replays.delete(r);
        r.stop();
      }
      this.emit('replay-stats', { imageRef, manifestDigest, hits: replay.hits, misses: replay.misses });
    }, this.#opts.recordMaxMs);
    window.unref?.();
    let timer: NodeJS.Timeout | undefined;
    const ready = await Promise.race([
      replay.firstBatch.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.#opts.waitMs))),
    ]);
    clearTimeout(timer);
    return { mode: 'replay', firstBatchReady: ready, replay, ...(recorder !== undefined ? { recorder } : {}) };
  }

  #record(imageRef: string, manifestDigest: Digest, layers: StreamedLayer[]): PrefetchStart {
    if (!this.#opts.record) return { mode: 'none' };
    const recorder = new PrefetchRecorder({
      fetcher: this.#streamer.fetcher,
      manifestDigest,
      layers: layers.map((l) => l.index),
      quietMs: this.#opts.quietMs,
      recordMaxMs: this.#opts.recordMaxMs,
      signal: this.#controller.signal,
    });
    const done = recorder.done;
    this.#recorders.add(recorder);
    void done.finally(() => this.#recorders.delete(recorder));
    for (const l of layers) {
      const set = this.#recording.get(l.digest) ?? new Set();
      set.add(done);
      this.#recording.set(l.digest, set);
    }
    void done.finally(() => {
      for (const l of layers) {
        const set = this.#recording.get(l.digest);
        set?.delete(done);
        if (set?.size === 0) this.#recording.delete(l.digest);
      }
    });
    const stored = recorder.done
      .then(async (recorded) => {
        let report = recorded;
        if (report.ranges.length === 0) return;
        const packed = this.#opts.packs ? await this.#buildPack(report, layers) : undefined;
        if (packed !== undefined) {
          report = { ...report, pack: packed.descriptor };
          await this.store.putPack(packed.descriptor, packed.bytes);
        }
        const path = await this.store.put(report);
        const blocks = report.ranges.reduce((n, r) => n + r.count, 0);
        this.emit('recorded', { imageRef, manifestDigest, ranges: report.ranges.length, blocks, path });
        if (this.#opts.pushReports) {
          const artifactDigest = await pushPrefetchReport(this.#streamer.registry, parseReference(imageRef), report, packed !== undefined ? { pack: packed.bytes } : {});
          this.emit('pushed', { imageRef, manifestDigest, artifactDigest });
        }
      })
      .catch((err: unknown) => void this.emit('error', err));
    this.#pendingStores.add(stored);
    void stored.finally(() => this.#pendingStores.delete(stored));
    return { mode: 'record', recorder };
  }

  /**
   * The pack of a recorded report: its file ranges read through the fetcher (their blocks are
   * usually still cached) and compressed. Undefined (reported as an error) when it cannot be made;
   * the report is kept without one. Not aborted by close(), which waits for it.
   */
  async #buildPack(report: PrefetchReport, layers: readonly StreamedLayer[]): Promise<Awaited<ReturnType<typeof packPrefetchReport>>> {
    try {
      return await packPrefetchReport(report, new Map(layers.map((l) => [l.digest, l])), this.#streamer.fetcher);
    } catch (err) {
      this.emit('error', err);
      return undefined;
    }
  }

  /**
   * The ranges of a report's pack, when packs are on, it has one that fits the image's indexes
   * (its members hold exactly these ranges) and the budget. Otherwise undefined (a pack that does
   * not fit is reported as an error): the blocks are replayed.
   */
  #packRanges(report: PrefetchReport, indexes: ReadonlyMap<Digest, LayerIndex>): PackFileRange[] | undefined {
    const pack = report.pack;
    if (!this.#opts.packs || pack === undefined || report.files === undefined) return undefined;
    const ranges = reportPackRanges(report, (d) => indexes.get(d), pack);
    try {
      packMemberRanges(pack, ranges);
    } catch (err) {
      this.emit('error', new ImgstreamError(ErrorCode.INVALID_PREFETCH_REPORT, `prefetch pack of ${report.manifestDigest} does not fit the image: ${(err as Error).message}`, { digest: report.manifestDigest }));
      return undefined;
    }
    // the budget bounds a pack as it bounds the blocks: a larger one is left to the block replay
    return ranges.reduce((n, f) => n + f.length, 0) <= this.#opts.budgetBytes ? ranges : undefined;
  }

  /** The blob of a report's pack: the local copy when the report is local and has it, else the registry's. */
  async #openPack(imageRef: string, report: PrefetchReport, source: PrefetchReportSource): Promise<(RangeReader & { close?: () => Promise<void> }) | undefined> {
    const pack = report.pack;
    if (pack === undefined) return undefined;
    try {
      const local = source === 'local' ? await this.store.openPack(pack) : undefined;
      if (local !== undefined) return local;
    } catch (err) {
      this.emit('error', err);
    }
    if (!this.#opts.registryReports) return undefined;
    return this.#streamer.registry.blobReader(parseReference(imageRef), { digest: pack.digest, size: pack.size });
  }

  /**
   * The stored report, else the registry's (when registry reports are on). Rejects with an
   * INVALID_PREFETCH_REPORT error (its `source` set) when the one found is corrupt.
   */
  async #findReport(imageRef: string, manifestDigest: Digest): Promise<FoundReport> {
    const local = await this.store.get(manifestDigest);
    if (local !== undefined || !this.#opts.registryReports) return { report: local, source: 'local' };
    try {
      return { report: await this.#fromRegistry(imageRef, manifestDigest), source: 'registry' };
    } catch (err) {
      throw Object.assign(err as Error, { source: 'registry' });
    }
  }

  /** A registry report; a registry that cannot be asked counts as having none (reported as an error). */
  async #fromRegistry(imageRef: string, manifestDigest: Digest): Promise<PrefetchReport | undefined> {
    try {
      return await fetchPrefetchReport(this.#streamer.registry, parseReference(imageRef), manifestDigest, { signal: this.#controller.signal });
    } catch (err) {
      if (isImgstreamError(err, ErrorCode.INVALID_PREFETCH_REPORT)) throw err;
      this.emit('error', err);
      return undefined;
    }
  }

  #report(event: Parameters<ImagePrefetcherEvents['report']>[0]): void {
    publish(diag.report, event);
    this.emit('report', event);
  }
}

/** What a report lookup found: the report (if any), where, and a registry pack read ahead. */
interface FoundReport {
  readonly report: PrefetchReport | undefined;
  readonly source: PrefetchReportSource;
  readonly pack?: PackReadAhead | undefined;
}

/** A report of the blocks that hold the given file ranges (and those ranges as its files), in their order. */
function blocksOfRanges(report: PrefetchReport, ranges: readonly PackFileRange[], indexes: ReadonlyMap<Digest, LayerIndex>): PrefetchReport {
  const reads: Array<{ layer: Digest; block: number }> = [];
  const fileReads: Array<{ layer: Digest; path: string; offset: number; length: number }> = [];
  for (const f of ranges) {
    const layer = report.layers[f.layer]!.digest;
    const entry = indexes.get(layer)?.entries.get(f.path);
    for (const x of entry?.extents ?? []) if (x.fileOffset < f.offset + f.length && x.fileOffset + x.length > f.offset) reads.push({ layer, block: x.block });
    fileReads.push({ layer, path: f.path, offset: f.offset, length: f.length });
  }
  return buildPrefetchReport(report.manifestDigest, report.layers, reads, new Date(report.createdAt), fileReads);
}
