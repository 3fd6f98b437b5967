import { LRUCache } from 'lru-cache';
import type { Digest } from '../digest.js';
import { invalidOption } from '../errors.js';

/** Options of {@link ContentCache}. */
export interface ContentCacheOptions {
  /**
   * Upper bound of the decoded bytes held, in bytes. Required: a content cache cannot be built
   * without a bound. The whole bound may be resident in memory. Typical value:
   * `defaults.engine.maxContentCacheBytes` (1 GiB, GKE's `max_content_cache_size_mb=1024`).
   */
  maxBytes: number;
}

/**
 * In-memory cache of decoded, verified blocks, keyed by (layer digest, block index), bounded in
 * bytes with least-recently-used eviction. Only verified bytes may be put here.
 */
export class ContentCache {
  readonly maxBytes: number;
  readonly #lru: LRUCache<string, Uint8Array>;

  constructor(options: ContentCacheOptions) {
    const maxBytes = options?.maxBytes;
    if (typeof maxBytes !== 'number' || !Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
      throw invalidOption('maxBytes', 'a content cache needs a positive integer byte bound');
    }
    this.maxBytes = maxBytes;
    this.#lru = new LRUCache<string, Uint8Array>({
      maxSize: maxBytes,
      maxEntrySize: maxBytes,
      sizeCalculation: (value) => Math.max(1, value.byteLength),
    });
  }

  /** The cached bytes of a block, marking it recently used; undefined when absent. */
  get(layer: Digest, block: number): Uint8Array | undefined {
    return this.#lru.get(key(layer, block));
  }

  has(layer: Digest, block: number): boolean {
    return this.#lru.has(key(layer, block));
  }

  /** Stores a verified block. A block larger than the bound is not stored. */
  set(layer: Digest, block: number, data: Uint8Array): void {
    if (data.byteLength > this.maxBytes) return;
    this.#lru.set(key(layer, block), data);
  }

  /** Drops every block of a layer (e.g. once the layer is local). */
  deleteLayer(layer: Digest): void {
    const prefix = `${layer}#`;
    for (const k of [...this.#lru.keys()]) if (k.startsWith(prefix)) this.#lru.delete(k);
  }

  clear(): void {
    this.#lru.clear();
  }

  /** Decoded bytes held now. Never exceeds {@link maxBytes}. */
  get sizeBytes(): number {
    return this.#lru.calculatedSize;
  }

  /** Number of blocks held. */
  get blockCount(): number {
    return this.#lru.size;
  }
}

function key(layer: Digest, block: number): string {
  return `${layer}#${block}`;
}
