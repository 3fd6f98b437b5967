import type { Digest } from '../digest.js';
import type { LayerIndex } from '../index/model.js';
import type { PrefetchReport } from './prefetch-report.js';

/** A byte range of one regular file of a layer. */
export interface FilePiece {
  /** The file's path in the layer (as in {@link LayerIndex.entries}). */
  readonly path: string;
  readonly offset: number;
  readonly length: number;
}

/**
 * Which of a report's file ranges (`files`) can be read without waiting for the network, as a
 * replay loads their blocks: a page-cache warm-up reads each range once every block it lies in is
 * in the content cache, so it never fetches on its own. Ranges of files the index does not have,
 * or with a block the replay does not fetch (budget), are left out.
 */
export class PrefetchWarmupPlan {
  /** Ranges planned, and not handed out yet. */
  #pending = 0;
  readonly #ranges: Array<{ readonly piece: FilePiece; waiting: number }> = [];
  /** `digest:block` -> the ranges waiting for it. */
  readonly #waiters = new Map<string, number[]>();
  /** Per layer: ranges that lie in no block (holes), handed out with the layer's first blocks. */
  readonly #inNoBlock = new Map<Digest, number[]>();
  readonly #loaded = new Set<string>();

  /**
   * @param fetched whether the replay fetches a block (e.g. `PrefetchReplay.fetches`); ranges
   *   with any other block are left out.
   */
  constructor(report: PrefetchReport, layers: ReadonlyMap<Digest, LayerIndex>, fetched: (layerDigest: Digest, block: number) => boolean) {
    for (const f of report.files ?? []) {
      const digest = report.layers[f.layer]?.digest;
      const entry = digest === undefined ? undefined : layers.get(digest)?.entries.get(f.path);
      if (digest === undefined || entry?.type !== 'file' || entry.extents === undefined) continue;
      const end = f.offset + f.length;
      const blocks = new Set<number>();
      for (const x of entry.extents) if (x.fileOffset < end && x.fileOffset + x.length > f.offset) blocks.add(x.block);
      if ([...blocks].some((b) => !fetched(digest, b))) continue;
      const id = this.#ranges.length;
      this.#ranges.push({ piece: { path: f.path, offset: f.offset, length: f.length }, waiting: blocks.size });
      this.#pending++;
      const keys = blocks.size === 0 ? [] : [...blocks].map((b) => `${digest}:${b}`);
      if (keys.length === 0) this.#inNoBlock.set(digest, [...(this.#inNoBlock.get(digest) ?? []), id]);
      for (const key of keys) {
        const list = this.#waiters.get(key);
        if (list === undefined) this.#waiters.set(key, [id]);
        else list.push(id);
      }
    }
  }

  /** Ranges not handed out yet. */
  get pending(): number {
    return this.#pending;
  }

  /**
   * Blocks of a layer are in the content cache: the ranges of that layer that wait for nothing
   * else any more, in report order. Each range is handed out once.
   */
  loaded(layerDigest: Digest, blocks: readonly number[]): FilePiece[] {
    const ready = this.#inNoBlock.get(layerDigest) ?? [];
    this.#inNoBlock.delete(layerDigest);
    for (const b of blocks) {
      const key = `${layerDigest}:${b}`;
      if (this.#loaded.has(key)) continue;
      this.#loaded.add(key);
      for (const id of this.#waiters.get(key) ?? []) if (--this.#ranges[id]!.waiting === 0) ready.push(id);
      this.#waiters.delete(key);
    }
    ready.sort((a, b) => a - b);
    this.#pending -= ready.length;
    return ready.map((id) => this.#ranges[id]!.piece);
  }
}
