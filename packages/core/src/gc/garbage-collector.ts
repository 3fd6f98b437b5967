import { EventEmitter } from 'eventemitter3';
import type { LayerCache } from '../cache/layer-cache.js';
import { defaults } from '../defaults.js';
import { channel, publish } from '../diagnostics.js';
import type { Digest } from '../digest.js';
import { invalidOption } from '../errors.js';
import type { ImagesInUseStore } from './images-in-use-store.js';

/** Time source of the collector; inject one in tests instead of sleeping. */
export interface GcClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: GcClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** Options of {@link GarbageCollector}. */
export interface GarbageCollectorOptions {
  layerCache: LayerCache;
  imagesInUse: ImagesInUseStore;
  /** Period between collections in milliseconds. Default 180 000 (GKE `gc_period=3m`). */
  gcPeriodMs?: number;
  /** How long a layer must stay unreferenced before removal, in milliseconds. Default 600 000. */
  gcGracePeriodMs?: number;
  /** Default: the system clock. */
  clock?: GcClock;
  /** Extra veto: layers that must stay (e.g. mounted by FUSE, being downloaded). */
  isBusy?: (layer: Digest) => boolean;
}

export interface GcRunResult {
  readonly removed: readonly Digest[];
  /** Unreferenced layers still inside their grace period or busy. */
  readonly kept: readonly Digest[];
}

export interface GarbageCollectorEvents {
  run: (result: GcRunResult) => void;
  error: (err: unknown) => void;
}

const gcChannel = channel('core:gc');

/**
 * Removes cached layers that no image in use references, once they have stayed unreferenced for
 * the grace period. Never removes a referenced layer, a pinned (being read) one or a busy one:
 * the checks run synchronously right before each removal.
 */
export class GarbageCollector extends EventEmitter<GarbageCollectorEvents> {
  readonly gcPeriodMs: number;
  readonly gcGracePeriodMs: number;
  readonly #cache: LayerCache;
  readonly #store: ImagesInUseStore;
  readonly #clock: GcClock;
  readonly #isBusy: (layer: Digest) => boolean;
  readonly #unreferencedSince = new Map<Digest, number>();
  #timer: unknown;
  #running: Promise<GcRunResult> | undefined;
  #closed = false;

  constructor(options: GarbageCollectorOptions) {
    super();
    if (options?.layerCache === undefined) throw invalidOption('layerCache', 'is required');
    if (options.imagesInUse === undefined) throw invalidOption('imagesInUse', 'is required');
    this.#cache = options.layerCache;
    this.#store = options.imagesInUse;
    this.gcPeriodMs = options.gcPeriodMs ?? defaults.engine.gcPeriodMs;
    this.gcGracePeriodMs = options.gcGracePeriodMs ?? defaults.engine.gcGracePeriodMs;
    if (!Number.isSafeInteger(this.gcPeriodMs) || this.gcPeriodMs < 1) throw invalidOption('gcPeriodMs', 'must be a positive integer');
    if (!Number.isSafeInteger(this.gcGracePeriodMs) || this.gcGracePeriodMs < 0) throw invalidOption('gcGracePeriodMs', 'must be a non-negative integer');
    this.#clock = options.clock ?? systemClock;
    this.#isBusy = options.isBusy ?? (() => false);
    this.#store.on('released', this.#onReleased);
    this.#cache.on('unpinned', this.#onUnpinned);
  }

  // a layer used since the last run starts its grace period again at the next run
  readonly #onReleased = (layers: readonly Digest[]): void => {
    for (const l of layers) this.#unreferencedSince.delete(l);
  };

  readonly #onUnpinned = ({ digest }: { digest: Digest }): void => {
    this.#unreferencedSince.delete(digest);
  };

  /** Starts the periodic loop. */
  start(): void {
    if (this.#closed || this.#timer !== undefined) return;
    this.#schedule();
  }

  #schedule(): void {
    this.#timer = this.#clock.setTimeout(() => {
      this.runOnce()
        .catch((err: unknown) => this.emit('error', err))
        .finally(() => {
          if (!this.#closed) this.#schedule();
        });
    }, this.gcPeriodMs);
  }

  /** One collection now (runs are never concurrent). */
  runOnce(): Promise<GcRunResult> {
    this.#running ??= this.#collect().finally(() => (this.#running = undefined));
    return this.#running;
  }

  async #collect(): Promise<GcRunResult> {
    await Promise.all([this.#cache.ready(), this.#store.ready()]);
    const now = this.#clock.now();
    const referenced = this.#store.referencedLayers();
    const cached = new Set(this.#cache.list());
    for (const d of [...this.#unreferencedSince.keys()]) if (!cached.has(d) || referenced.has(d)) this.#unreferencedSince.delete(d);
    const removed: Digest[] = [];
    const kept: Digest[] = [];
    for (const layer of cached) {
      if (referenced.has(layer)) continue;
      if (this.#cache.isPinned(layer) || this.#isBusy(layer)) {
        this.#unreferencedSince.delete(layer);
        kept.push(layer);
        continue;
      }
      const since = this.#unreferencedSince.get(layer);
      if (since === undefined) {
        this.#unreferencedSince.set(layer, now);
        if (this.gcGracePeriodMs > 0) {
          kept.push(layer);
          continue;
        }
      } else if (now - since < this.gcGracePeriodMs) {
        kept.push(layer);
        continue;
      }
      // re-check synchronously right before removing: an image may have been added meanwhile
      if (this.#store.isReferenced(layer) || this.#cache.isPinned(layer) || this.#isBusy(layer)) {
        this.#unreferencedSince.delete(layer);
        kept.push(layer);
        continue;
      }
      if (await this.#cache.remove(layer)) {
        removed.push(layer);
        this.#unreferencedSince.delete(layer);
      } else {
        kept.push(layer);
      }
    }
    const result = { removed, kept };
    publish(gcChannel, { event: 'run', ...result });
    this.emit('run', result);
    return result;
  }

  /** Stops the loop (waits for a running collection). Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#store.off('released', this.#onReleased);
    this.#cache.off('unpinned', this.#onUnpinned);
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running?.catch(() => {});
  }
}
