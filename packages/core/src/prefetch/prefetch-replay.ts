import { setMaxListeners } from 'node:events';
import { defaults } from '../defaults.js';
import type { Digest } from '../digest.js';
import { invalidOption } from '../errors.js';
import type { BlockFetcher, FetchLayer } from '../fetch/block-fetcher.js';
import { watchFirstReads } from './first-reads.js';
import type { PrefetchReport } from './prefetch-report.js';

/** Options of {@link PrefetchReplay}. */
export interface PrefetchReplayOptions {
  /** The fetcher blocks are loaded through (into its content cache). Required. */
  fetcher: BlockFetcher;
  /** A report already checked against the image (checkPrefetchReport). Required. */
  report: PrefetchReport;
  /** The image's streamed layers by digest. Required. */
  layers: ReadonlyMap<Digest, FetchLayer>;
  /** Most decoded bytes fetched; blocks past it (in report order) are skipped. Default `defaults.prefetch.budgetBytes`. */
  budgetBytes?: number;
  /**
   * Batches fetched at once, after the first batch: that one goes alone (container creation waits
   * for it, see `firstBatch`). Default `defaults.prefetch.parallelBatches`.
   */
  parallelBatches?: number;
  /**
   * Decoded bytes per batch; a batch's adjacent blocks go out as one range request. The first
   * batches are smaller (1 MiB, then doubling up to this): what a start-up reads first arrives
   * first instead of sharing the link with the batches running beside it. Default `defaults.prefetch.batchBytes`.
   */
  batchBytes?: number;
  /**
   * Unlisted blocks between two listed blocks of a batch are fetched too when their compressed
   * size is at most this, so both go out in one range request. 0 disables. Default `defaults.prefetch.maxGapBytes`.
   */
  maxGapBytes?: number;
  /** Aborts the replay (fetches in flight are dropped). */
  signal?: AbortSignal;
  /**
   * Called as blocks of the report land in the content cache: per batch and layer, the report's
   * blocks (gap blocks left out) in report order. E.g. to warm the page cache of a FUSE mount with
   * the files in them (`filePiecesOfBlocks`). Exceptions are ignored.
   */
  onLoaded?: (layerDigest: Digest, blocks: readonly number[]) => void;
}

/** What a replay did. */
export interface PrefetchReplayResult {
  /** Blocks the report lists. */
  readonly reportBlocks: number;
  /** Blocks loaded (in the cache after the replay), gap blocks included. */
  readonly blocks: number;
  /** Decoded bytes of the loaded blocks. */
  readonly bytes: number;
  /** Blocks left out because of the budget. */
  readonly skippedBlocks: number;
  readonly batches: number;
  /** Batches that failed (their blocks are read on demand later). */
  readonly failedBatches: number;
  readonly durationMs: number;
}

/** Decoded bytes of the first batch; each next one may be twice as large, up to `batchBytes`. */
const FIRST_BATCH_BYTES = 1024 * 1024;

interface Batch {
  /** Per layer: the report's blocks in report order, then the gap blocks added to them. */
  readonly byLayer: Map<Digest, number[]>;
  /** Per layer: how many of its blocks are the report's (the rest are gap blocks). */
  readonly listed: Map<Digest, number>;
  bytes: number;
}

/**
 * Fetches the blocks of a prefetch report at `prefetch` priority (above background downloads,
 * below foreground reads): in report order, cut into batches of about `batchBytes`, the first
 * alone, then several batches at once, adjacent blocks merged into one range request, within
 * `budgetBytes`. Counts prefetch hits (a block's first foreground read found it in the cache, and
 * the replay fetches it) and misses (a first foreground read of a layer of the image that had to
 * wait for the network) until stop().
 */
export class PrefetchReplay {
  /** Resolves when the first batch has settled (immediately when there is nothing to fetch). */
  readonly firstBatch: Promise<void>;
  /** Resolves when every batch has settled; never rejects. */
  readonly done: Promise<PrefetchReplayResult>;
  readonly #fetcher: BlockFetcher;
  readonly #layers: ReadonlyMap<Digest, FetchLayer>;
  /** Blocks the replay fetches (within the budget). */
  readonly #planned = new Set<string>();
  #hits = 0;
  #misses = 0;
  #unwatch: (() => void) | undefined;

  constructor(options: PrefetchReplayOptions) {
    if (options?.fetcher === undefined) throw invalidOption('fetcher', 'is required');
    const budget = options.budgetBytes ?? defaults.prefetch.budgetBytes;
    const parallel = options.parallelBatches ?? defaults.prefetch.parallelBatches;
    const batchBytes = options.batchBytes ?? defaults.prefetch.batchBytes;
    const maxGap = options.maxGapBytes ?? defaults.prefetch.maxGapBytes;
    if (!(maxGap >= 0)) throw invalidOption('maxGapBytes', 'must be >= 0');
    if (!(budget >= 0)) throw invalidOption('budgetBytes', 'must be >= 0');
    if (!Number.isSafeInteger(parallel) || parallel < 1) throw invalidOption('parallelBatches', 'must be a positive integer');
    if (!(batchBytes > 0)) throw invalidOption('batchBytes', 'must be positive');
    this.#fetcher = options.fetcher;
    this.#layers = options.layers;
    const started = performance.now();

    const batches: Batch[] = [];
    let total = 0;
    let reportBlocks = 0;
    let skipped = 0;
    let current: Batch | undefined;
    for (const r of options.report.ranges) {
      const digest = options.report.layers[r.layer]!.digest;
      const layer = this.#layers.get(digest);
      for (let b = r.first; b < r.first + r.count; b++) {
        reportBlocks++;
        const size = layer?.index.blocks[b]?.uncompressedSize;
        if (size === undefined || total + size > budget) {
          skipped++;
          continue;
        }
        total += size;
        if (current === undefined || current.bytes + size > Math.min(batchBytes, FIRST_BATCH_BYTES * 2 ** (batches.length - 1))) {
          current = { byLayer: new Map(), listed: new Map(), bytes: 0 };
          batches.push(current);
        }
        current.bytes += size;
        this.#planned.add(`${digest}:${b}`);
        const list = current.byLayer.get(digest);
        if (list === undefined) current.byLayer.set(digest, [b]);
        else list.push(b);
        current.listed.set(digest, (current.listed.get(digest) ?? 0) + 1);
      }
    }

    // fill small gaps between listed blocks of a batch, within the budget
    for (const batch of batches) {
      for (const [digest, list] of batch.byLayer) {
        const blocksInfo = this.#layers.get(digest)!.index.blocks;
        const sorted = [...list].sort((x, y) => x - y);
        const fill: number[] = [];
        for (let i = 1; i < sorted.length; i++) {
          const from = sorted[i - 1]! + 1;
          const to = sorted[i]!;
          if (to === from) continue;
          const gapStart = blocksInfo[from]!.compressedOffset;
          const gapEnd = blocksInfo[to]!.compressedOffset;
          let gapBytes = 0;
          for (let b = from; b < to; b++) gapBytes += blocksInfo[b]!.uncompressedSize;
          if (gapEnd - gapStart > maxGap || total + gapBytes > budget) continue;
          total += gapBytes;
          for (let b = from; b < to; b++) fill.push(b);
        }
        for (const b of fill) {
          if (this.#planned.has(`${digest}:${b}`)) continue;
          this.#planned.add(`${digest}:${b}`);
          list.push(b);
        }
      }
    }

    // The replay waits for each block in flight on a signal (one listener each, removed when the
    // block settles): its own, so the caller's signal gets one listener per replay, not hundreds.
    const ac = new AbortController();
    setMaxListeners(0, ac.signal);
    const outer = options.signal;
    const onAbort = (): void => ac.abort(outer?.reason);
    if (outer?.aborted === true) onAbort();
    else outer?.addEventListener('abort', onAbort, { once: true });
    const signal = ac.signal;

    let firstDone!: () => void;
    this.firstBatch = new Promise<void>((resolve) => (firstDone = resolve));
    if (batches.length === 0) firstDone();
    let next = 0;
    let blocks = 0;
    let bytes = 0;
    let failed = 0;
    // The first batch goes alone: container creation waits for it (`firstBatch`), so it gets the
    // whole link and CPU; the other lanes start once it has settled.
    const worker = async (lane: number): Promise<void> => {
      if (lane > 0) await this.firstBatch;
      while (next < batches.length && !signal.aborted) {
        const i = next++;
        const batch = batches[i]!;
        try {
          await Promise.all(
            [...batch.byLayer].map(async ([digest, list]) => {
              const layer = this.#layers.get(digest)!;
              await this.#fetcher.loadBlocks(layer, list, { priority: 'prefetch', signal });
              for (const b of list) {
                blocks++;
                bytes += layer.index.blocks[b]!.uncompressedSize;
              }
              try {
                options.onLoaded?.(digest, list.slice(0, batch.listed.get(digest)));
              } catch {
                // a listener's failure is not the replay's
              }
            }),
          );
        } catch {
          failed++;
        } finally {
          if (i === 0) firstDone();
        }
      }
    };
    this.#unwatch = watchFirstReads(this.#fetcher, this.#layers, (e, key) => {
      if (e.hit && this.#planned.has(key)) this.#hits++;
      else this.#misses++;
    });
    this.done = Promise.all(Array.from({ length: Math.min(parallel, Math.max(batches.length, 1)) }, (_v, lane) => worker(lane))).then(() => {
      outer?.removeEventListener('abort', onAbort);
      firstDone();
      return { reportBlocks, blocks, bytes, skippedBlocks: skipped, batches: batches.length, failedBatches: failed, durationMs: performance.now() - started };
    });
  }

  /** Whether the replay fetches this block (it is in the report within the budget, or fills a gap). */
  fetches(layerDigest: Digest, block: number): boolean {
    return this.#planned.has(`${layerDigest}:${block}`);
  }

  /** First foreground reads that found their block prefetched. */
  get hits(): number {
    return this.#hits;
  }

  /** First foreground reads of the image's layers whose block was not prefetched yet. */
  get misses(): number {
    return this.#misses;
  }

  /** Stops counting hits and misses. Idempotent. */
  stop(): void {
    this.#unwatch?.();
    this.#unwatch = undefined;
  }
}
