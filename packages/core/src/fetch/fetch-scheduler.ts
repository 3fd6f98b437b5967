import { invalidOption } from '../errors.js';
import { defaults } from '../defaults.js';

/** Who is waiting for bytes: a container read, a prefetch of a recorded working set, or background work. */
export type FetchPriority = 'foreground' | 'prefetch' | 'background';

const ORDER: readonly FetchPriority[] = ['foreground', 'prefetch', 'background'];

/** Options of {@link FetchScheduler}. */
export interface FetchSchedulerOptions {
  /** Range requests running at once, all priorities together. Default `defaults.maxConcurrentFetches` (8). */
  maxConcurrentFetches?: number;
}

interface Waiter {
  readonly priority: FetchPriority;
  start(): void;
}

/**
 * A small priority scheduler for range requests: at most `maxConcurrentFetches` run at once,
 * queued foreground work starts before prefetch, prefetch before background. While foreground work
 * is running or queued, at most one background request runs (whole-layer downloads yield to reads
 * without starving).
 */
export class FetchScheduler {
  readonly maxConcurrentFetches: number;
  #running = 0;
  #foregroundRunning = 0;
  #backgroundRunning = 0;
  readonly #queues: Record<FetchPriority, Waiter[]> = { foreground: [], prefetch: [], background: [] };
  #idleWaiters: Array<() => void> = [];

  constructor(options: FetchSchedulerOptions = {}) {
    const max = options.maxConcurrentFetches ?? defaults.maxConcurrentFetches;
    if (!Number.isSafeInteger(max) || max < 1) throw invalidOption('maxConcurrentFetches', 'must be a positive integer');
    this.maxConcurrentFetches = max;
  }

  /** Foreground requests running or queued. */
  get foregroundActive(): number {
    return this.#foregroundRunning + this.#queues.foreground.length;
  }

  get running(): number {
    return this.#running;
  }

  /** Runs `fn` when a slot of the given priority is free. Rejects with `signal.reason` if aborted while queued. */
  async run<T>(priority: FetchPriority, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.#acquire(priority, signal);
    try {
      return await fn();
    } finally {
      this.#release(priority);
    }
  }

  /** Resolves when no foreground request is running or queued. */
  whenForegroundIdle(signal?: AbortSignal): Promise<void> {
    if (this.foregroundActive === 0) return Promise.resolve();
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const done = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        this.#idleWaiters = this.#idleWaiters.filter((w) => w !== done);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#idleWaiters.push(done);
    });
  }

  #canStart(priority: FetchPriority): boolean {
    if (this.#running >= this.maxConcurrentFetches) return false;
    if (priority === 'background' && this.foregroundActive > 0 && this.#backgroundRunning > 0) return false;
    return true;
  }

  #acquire(priority: FetchPriority, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const ahead = ORDER.slice(0, ORDER.indexOf(priority) + 1).some((p) => this.#queues[p].length > 0);
    if (!ahead && this.#canStart(priority)) {
      this.#take(priority);
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const queue = this.#queues[priority];
      const waiter: Waiter = {
        priority,
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const i = queue.indexOf(waiter);
        if (i >= 0) queue.splice(i, 1);
        reject(signal?.reason);
        this.#pump();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      queue.push(waiter);
    });
  }

  #take(priority: FetchPriority): void {
    this.#running++;
    if (priority === 'foreground') this.#foregroundRunning++;
    if (priority === 'background') this.#backgroundRunning++;
  }

  #release(priority: FetchPriority): void {
    this.#running--;
    if (priority === 'foreground') this.#foregroundRunning--;
    if (priority === 'background') this.#backgroundRunning--;
    this.#pump();
  }

  #pump(): void {
    for (const p of ORDER) {
      const queue = this.#queues[p];
      while (queue.length > 0) {
        // a queued foreground waiter counts as active; it leaves the queue as it takes the slot
        if (!this.#canStart(p)) break;
        const w = queue.shift()!;
        this.#take(p);
        w.start();
      }
    }
    if (this.foregroundActive === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
