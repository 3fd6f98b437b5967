import type { RangeReader } from '../blob.js';
import type { Digest } from '../digest.js';
import type { BlockFetcher } from '../fetch/block-fetcher.js';
import { watchFirstReads } from './first-reads.js';
import type { PinnedRange } from '../fetch/pinned-file-ranges.js';
import { replayPrefetchPack, type PackFileRange, type PrefetchPackDescriptor, type PrefetchPackResult } from './prefetch-pack.js';
import type { PrefetchReplayResult } from './prefetch-replay.js';

/** Options of {@link PrefetchPackReplay}. */
export interface PrefetchPackReplayOptions {
  /** The fetcher whose `pinned` ranges the pack's file ranges go to. Required. */
  fetcher: BlockFetcher;
  readonly pack: PrefetchPackDescriptor;
  /** The pack's ranges (`packRangesOf` of the report's file ranges): what its members hold, in order. */
  readonly files: readonly PackFileRange[];
  /** The report's layer digests (`files[i].layer` indexes it). */
  readonly layerDigests: readonly Digest[];
  /** The pack blob (a local file, or the registry blob); closed by the replay when it ends, if it can be. */
  readonly reader: RangeReader & { close?: () => Promise<void> };
  /** Range requests in flight at once, after the first. Default 4. */
  readonly parallel?: number;
  /** Called as each member's ranges are pinned, per layer (members decode side by side: roughly in report order). Exceptions are ignored. */
  onPinned?: (layerDigest: Digest, ranges: ReadonlyArray<{ path: string; offset: number; length: number }>) => void;
  signal?: AbortSignal;
}

/** What a pack replay did, as a replay result (`blocks` 0: no block was fetched) with the pack's figures. */
export type PrefetchPackReplayResult = PrefetchReplayResult & { readonly pack: PrefetchPackResult };

/**
 * Replays a report's pack: reads it in parallel range requests of whole members, checks and
 * decodes each member and pins its ranges in the fetcher (`BlockFetcher.pinned`), so reads of them
 * are answered from memory. Counts hits (ranges first read from the pack) and misses (first foreground reads of a
 * block of the image's layers: what the pack did not hold) until {@link stop}, which also unpins.
 */
export class PrefetchPackReplay {
  /** Resolves when the first member is pinned, or the replay ended. */
  readonly firstBatch: Promise<void>;
  /** Resolves when the pack is read (or failed: `pack.error`); never rejects. */
  readonly done: Promise<PrefetchPackReplayResult>;
  readonly #fetcher: BlockFetcher;
  readonly #handles: PinnedRange[] = [];
  #misses = 0;
  #unwatch: (() => void) | undefined;

  constructor(options: PrefetchPackReplayOptions) {
    this.#fetcher = options.fetcher;
    let first!: () => void;
    this.firstBatch = new Promise<void>((resolve) => (first = resolve));
    this.#unwatch = watchFirstReads(this.#fetcher, new Set(options.layerDigests), () => this.#misses++);
    const started = performance.now();
    this.done = replayPrefetchPack(
      options.pack,
      options.files,
      options.layerDigests,
      options.reader,
      this.#fetcher.pinned,
      (handles) => {
        for (const h of handles) this.#handles.push(h);
      },
      (ranges) => {
        first();
        const byLayer = new Map<Digest, Array<{ path: string; offset: number; length: number }>>();
        for (const f of ranges) {
          const d = options.layerDigests[f.layer]!;
          const list = byLayer.get(d) ?? [];
          list.push({ path: f.path, offset: f.offset, length: f.length });
          byLayer.set(d, list);
        }
        for (const [d, list] of byLayer) {
          try {
            options.onPinned?.(d, list);
          } catch {
            // a listener's failure is not the replay's
          }
        }
      },
      { ...(options.parallel !== undefined ? { parallel: options.parallel } : {}), ...(options.signal !== undefined ? { signal: options.signal } : {}) },
    ).then(async (pack) => {
      first();
      await options.reader.close?.().catch(() => undefined);
      return { reportBlocks: 0, blocks: 0, bytes: pack.bytes, skippedBlocks: 0, batches: options.pack.members.length, failedBatches: pack.error !== undefined ? 1 : 0, durationMs: performance.now() - started, pack };
    });
  }

  /** File ranges whose first read was answered from the pack. */
  get hits(): number {
    let n = 0;
    for (const h of this.#handles) if (this.#fetcher.pinned.wasRead(h)) n++;
    return n;
  }

  /** First foreground reads of a block of the image's layers (reads the pack did not answer). */
  get misses(): number {
    return this.#misses;
  }

  /** Stops counting and unpins the ranges (reads go through the fetcher again). Idempotent. */
  stop(): void {
    if (this.#unwatch === undefined) return;
    this.#unwatch();
    this.#unwatch = undefined;
    // a member decoding now is filled into ranges that are gone: nothing is pinned after this
    this.#fetcher.pinned.remove(this.#handles);
  }
}
