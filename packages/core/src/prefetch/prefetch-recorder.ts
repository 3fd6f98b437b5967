import type { Digest } from '../digest.js';
import type { BlockFetcher, CacheLookupEvent, ReadEvent } from '../fetch/block-fetcher.js';
import { defaults } from '../defaults.js';
import { invalidOption } from '../errors.js';
import type { LayerIndex } from '../index/model.js';
import { buildPrefetchReport, MAX_PREFETCH_ABSENT_PATHS, reportLayerOf, type PrefetchReport } from './prefetch-report.js';

/** File reads kept for the report's file ranges (they are joined per file when the report is built). */
const MAX_FILE_READS = 1_000_000;
/** Lookups of present paths kept while recording (the report keeps at most MAX_PREFETCH_LOOKED_PATHS of those it did not read). */
const MAX_LOOKUPS = 100_000;

/** Options of {@link PrefetchRecorder}. */
export interface PrefetchRecorderOptions {
  /** The fetcher whose block lookups are recorded. Required. */
  fetcher: BlockFetcher;
  /** The platform manifest of the image. Required. */
  manifestDigest: Digest;
  /** The streamed layers of the image (bottom first); reads of other layers are ignored. Required. */
  layers: readonly LayerIndex[];
  /** Recording stops when no block was read for this long after the first read, ms. Default `defaults.prefetch.quietMs`. */
  quietMs?: number;
  /** Recording stops this long after it started at the latest, ms. Default `defaults.prefetch.recordMaxMs`. */
  recordMaxMs?: number;
  /** Aborting stops the recording (the report holds what was read so far). */
  signal?: AbortSignal;
}

/**
 * Records an image's start-up working set: every block of its layers looked up by a foreground
 * read of the fetcher (content cache hit or miss), in order, and the file ranges those reads asked
 * for (the report's `files`), until the reads go quiet or the time
 * limit passes. Reads the fetcher serves from a complete local layer count by the blocks their
 * file range lies in; reads that bypass the fetcher (a FUSE layer switched to its local
 * directory) are not seen.
 */
export class PrefetchRecorder {
  /** Resolves with the report when recording stops. */
  readonly done: Promise<PrefetchReport>;
  readonly #fetcher: BlockFetcher;
  readonly #layers: Map<Digest, LayerIndex>;
  readonly #reads: Array<{ layer: Digest; block: number }> = [];
  readonly #fileReads: Array<{ layer: Digest; path: string; offset: number; length: number }> = [];
  readonly #absent: Array<{ layer: Digest; path: string }> = [];
  readonly #absentSeen = new Set<string>();
  readonly #looked: Array<{ layer: Digest; path: string }> = [];
  readonly #lookedSeen = new Set<string>();
  readonly #quietMs: number;
  #quietTimer: NodeJS.Timeout | undefined;
  readonly #maxTimer: NodeJS.Timeout;
  #resolve!: () => void;
  #stopped = false;

  constructor(options: PrefetchRecorderOptions) {
    if (options?.fetcher === undefined) throw invalidOption('fetcher', 'is required');
    this.#fetcher = options.fetcher;
    this.#layers = new Map(options.layers.map((l) => [l.layerDigest, l]));
    this.#quietMs = options.quietMs ?? defaults.prefetch.quietMs;
    const maxMs = options.recordMaxMs ?? defaults.prefetch.recordMaxMs;
    if (!(this.#quietMs > 0)) throw invalidOption('quietMs', 'must be positive');
    if (!(maxMs > 0)) throw invalidOption('recordMaxMs', 'must be positive');
    const stopped = new Promise<void>((resolve) => (this.#resolve = resolve));
    this.done = stopped.then(() => buildPrefetchReport(options.manifestDigest, options.layers.map(reportLayerOf), this.#reads, new Date(), this.#fileReads, this.#absent, this.#looked));
    this.#fetcher.on('cache', this.#onCache);
    this.#fetcher.on('read', this.#onRead);
    this.#maxTimer = setTimeout(() => this.stop(), maxMs);
    this.#maxTimer.unref?.();
    options.signal?.addEventListener('abort', () => this.stop(), { once: true });
  }

  /** Block reads recorded so far (with repeats). */
  get reads(): number {
    return this.#reads.length;
  }

  /**
   * Records a lookup of a path in one of the image's layers that the layer does not have (a FUSE
   * server's `onAbsent`): the report's `absent`. Ignored for other layers, for paths the layer's
   * index has, and once stopped.
   */
  noteAbsent(layer: Digest, path: string): void {
    if (this.#layers.get(layer)?.entries.has(path) === false) this.#keep(this.#absent, this.#absentSeen, MAX_PREFETCH_ABSENT_PATHS, layer, path);
  }

  /**
   * Records a lookup of a path that one of the image's layers has (a FUSE server's `onLookup`):
   * the report's `looked`, but the paths the start also read. Ignored for other layers, for paths
   * the index does not have, and once stopped.
   */
  noteLookup(layer: Digest, path: string): void {
    if (this.#layers.get(layer)?.entries.has(path) === true) this.#keep(this.#looked, this.#lookedSeen, MAX_LOOKUPS, layer, path);
  }

  /** Keeps the first lookup of a path in `list` (at most `max`), while recording. */
  #keep(list: Array<{ layer: Digest; path: string }>, seen: Set<string>, max: number, layer: Digest, path: string): void {
    const key = `${layer}\0${path}`;
    if (this.#stopped || list.length >= max || seen.has(key)) return;
    seen.add(key);
    list.push({ layer, path });
  }

  /** Stops recording now; `done` resolves. Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#fetcher.off('cache', this.#onCache);
    this.#fetcher.off('read', this.#onRead);
    clearTimeout(this.#maxTimer);
    if (this.#quietTimer !== undefined) clearTimeout(this.#quietTimer);
    this.#resolve();
  }

  readonly #onCache = (e: CacheLookupEvent): void => {
    if (e.priority !== 'foreground' || !this.#layers.has(e.layerDigest)) return;
    this.#add(e.layerDigest, e.block);
  };

  /**
   * Every foreground read of a file: its range (for the page-cache warm-up). Reads served from a
   * complete local layer also count by the blocks their file range lies in, by the index.
   */
  readonly #onRead = (e: ReadEvent): void => {
    if (e.priority !== 'foreground' || e.path === undefined || !this.#layers.has(e.layerDigest)) return;
    if (e.bytes > 0 && this.#fileReads.length < MAX_FILE_READS) this.#fileReads.push({ layer: e.layerDigest, path: e.path, offset: e.offset, length: e.bytes });
    if (!e.local) return;
    const entry = this.#layers.get(e.layerDigest)?.entries.get(e.path);
    if (entry?.extents === undefined) return;
    const end = e.offset + e.bytes;
    for (const x of entry.extents) if (x.fileOffset < end && x.fileOffset + x.length > e.offset) this.#add(e.layerDigest, x.block);
  };

  #add(layer: Digest, block: number): void {
    this.#reads.push({ layer, block });
    if (this.#quietTimer !== undefined) clearTimeout(this.#quietTimer);
    // not unref'd: a recording that saw reads finishes (at most quietMs) before the process may exit
    this.#quietTimer = setTimeout(() => this.stop(), this.#quietMs);
  }
}
