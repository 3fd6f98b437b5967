import { invalidOption } from '../errors.js';
import { defaults } from '../defaults.js';

/** Who is waiting for bytes: a container read, a prefetch of a recorded working set, or background work. */
export type FetchPriority = 'foreground' | 'prefetch' | 'background';

const ORDER: readonly FetchPriority[] = ['foreground', 'prefetch', 'background'];

/** Options of {@link FetchScheduler}. */
export interface FetchSchedulerOptions {
  /** Range requests running at once, all priorities together. Default `defaults.engine.maxConcurrentFetches` (8). */
  maxConcurrentFetches?: number;
}

interface Waiter {
  priority: FetchPriority;
  start(taken: FetchPriority): void;
}

/**
 * Lets the owner of a queued request raise its priority (e.g. a container now waits for a block
 * that read-ahead asked for). Raising a request that already runs has no effect.
 */
export interface FetchTicket {
  priority: FetchPriority;
  raise?: (priority: FetchPriority) => void;
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
    const max = options.maxConcurrentFetches ?? defaults.engine.maxConcurrentFetches;
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

  /**
   * Runs `fn` when a slot of the given priority is free. Rejects with `signal.reason` if aborted
   * while queued. Pass a {@link FetchTicket} instead of a priority to be able to raise it while queued.
   */
  async run<T>(priority: FetchPriority | FetchTicket, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const ticket = typeof priority === 'string' ? { priority } : priority;
    const taken = await this.#acquire(ticket, signal);
    try {
      return await fn();
    } finally {
      this.#release(taken);
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

  #acquire(ticket: FetchTicket, signal?: AbortSignal): Promise<FetchPriority> {
    signal?.throwIfAborted();
    const priority = ticket.priority;
    const ahead = ORDER.slice(0, ORDER.indexOf(priority) + 1).some((p) => this.#queues[p].length > 0);
    if (!ahead && this.#canStart(priority)) {
      this.#take(priority);
      return Promise.resolve(priority);
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        priority,
        start: (taken) => {
          signal?.removeEventListener('abort', onAbort);
          ticket.raise = undefined;
          resolve(taken);
        },
      };
      const onAbort = (): void => {
        const queue = this.#queues[waiter.priority];
        const i = queue.indexOf(waiter);
        if (i >= 0) queue.splice(i, 1);
        ticket.raise = undefined;
        reject(signal?.reason);
        this.#pump();
      };
      ticket.raise = (to) => {
        ticket.priority = to;
        if (ORDER.indexOf(to) >= ORDER.indexOf(waiter.priority)) return;
        const from = this.#queues[waiter.priority];
        const i = from.indexOf(waiter);
        if (i < 0) return;
        from.splice(i, 1);
        waiter.priority = to;
        this.#queues[to].push(waiter);
        this.#pump();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queues[priority].push(waiter);
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
        w.start(p);
      }
    }
    if (this.foregroundActive === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
