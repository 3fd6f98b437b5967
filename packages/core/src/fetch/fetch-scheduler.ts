import { invalidOption } from '../errors.js';
import { defaults } from '../defaults.js';

/** Who is waiting for bytes: a container read, a prefetch of a recorded working set, or background work. */
export type FetchPriority = 'foreground' | 'prefetch' | 'background';

const ORDER: readonly FetchPriority[] = ['foreground', 'prefetch', 'background'];

/** Options of {@link FetchScheduler}. */
export interface FetchSchedulerOptions {
  /** Range requests running at once, all priorities together. Default `defaults.engine.maxConcurrentFetches` (8). */
  maxConcurrentFetches?: number;
  /**
   * Background requests wait until no foreground or prefetch request has run for this long, in ms
   * (stargz-snapshotter's background-fetch `silence_period_msec`): whole-layer downloads do not
   * take bandwidth, CPU or event-loop time while a container starts up. Default 0 (no silence;
   * the {@link ImageStreamer} sets `defaults.engine.downloadSilenceMs`).
   */
  backgroundSilenceMs?: number;
  /**
   * A background request that has waited this long for silence starts anyway (at most one at a time
   * while foreground work runs), so a workload that never goes quiet does not stall downloads
   * for ever. In ms. Default `defaults.engine.downloadMaxDeferMs` (15 000).
   */
  backgroundMaxDeferMs?: number;
}

interface Waiter {
  priority: FetchPriority;
  /** When it was queued (`performance.now()` ms). */
  readonly sinceMs: number;
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
 * without starving). With `backgroundSilenceMs`, background requests wait for that long a silence
 * of foreground and prefetch requests (at most `backgroundMaxDeferMs`).
 */
export class FetchScheduler {
  readonly maxConcurrentFetches: number;
  readonly backgroundSilenceMs: number;
  readonly backgroundMaxDeferMs: number;
  #running = 0;
  #foregroundRunning = 0;
  #backgroundRunning = 0;
  /** Foreground and prefetch requests running. */
  #busyRunning = 0;
  /** When the last foreground or prefetch request started or ended (`performance.now()` ms). */
  #lastBusyMs = Number.NEGATIVE_INFINITY;
  #silenceTimer: { timer: NodeJS.Timeout; dueMs: number } | undefined;
  readonly #queues: Record<FetchPriority, Waiter[]> = { foreground: [], prefetch: [], background: [] };
  #idleWaiters: Array<() => void> = [];

  constructor(options: FetchSchedulerOptions = {}) {
    const max = options.maxConcurrentFetches ?? defaults.engine.maxConcurrentFetches;
    if (!Number.isSafeInteger(max) || max < 1) throw invalidOption('maxConcurrentFetches', 'must be a positive integer');
    this.maxConcurrentFetches = max;
    this.backgroundSilenceMs = options.backgroundSilenceMs ?? 0;
    if (!Number.isSafeInteger(this.backgroundSilenceMs) || this.backgroundSilenceMs < 0) throw invalidOption('backgroundSilenceMs', 'must be a non-negative integer');
    this.backgroundMaxDeferMs = options.backgroundMaxDeferMs ?? defaults.engine.downloadMaxDeferMs;
    if (!Number.isSafeInteger(this.backgroundMaxDeferMs) || this.backgroundMaxDeferMs < 0) throw invalidOption('backgroundMaxDeferMs', 'must be a non-negative integer');
  }

  /** Foreground requests running or queued. */
  get foregroundActive(): number {
    return this.#foregroundRunning + this.#queues.foreground.length;
  }

  get running(): number {
    return this.#running;
  }

  /** Foreground or prefetch requests running or queued. */
  get busy(): boolean {
    return this.foregroundActive > 0 || this.#busyRunning > 0 || this.#queues.prefetch.length > 0;
  }

  /**
   * Records foreground activity that needed no request (a read served from the content cache):
   * it counts like a request for the background silence, so downloads wait while a container that
   * found its blocks prefetched is still starting.
   */
  touch(): void {
    this.#lastBusyMs = performance.now();
  }

  /** When the last foreground or prefetch request started or ended, or {@link touch} was called (`performance.now()` ms; -Infinity before the first). */
  get lastBusyMs(): number {
    return this.#lastBusyMs;
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

  #canStart(priority: FetchPriority, sinceMs: number): boolean {
    if (this.#running >= this.maxConcurrentFetches) return false;
    if (priority !== 'background') return true;
    const busy = this.busy;
    if (busy && this.#backgroundRunning > 0) return false;
    if (this.backgroundSilenceMs === 0) return true;
    const now = performance.now();
    const deferredEnough = now - sinceMs >= this.backgroundMaxDeferMs;
    if (deferredEnough) return true;
    const quietAtMs = busy ? Number.POSITIVE_INFINITY : this.#lastBusyMs + this.backgroundSilenceMs;
    if (now >= quietAtMs) return true;
    // look again when the silence or the deferral bound ends (a new busy request re-arms it)
    this.#armSilenceTimer(Math.min(quietAtMs, sinceMs + this.backgroundMaxDeferMs) - now);
    return false;
  }

  #armSilenceTimer(inMs: number): void {
    const dueMs = performance.now() + Math.max(1, Math.ceil(inMs));
    if (this.#silenceTimer !== undefined) {
      if (this.#silenceTimer.dueMs <= dueMs) return;
      clearTimeout(this.#silenceTimer.timer);
    }
    const timer = setTimeout(() => {
      this.#silenceTimer = undefined;
      this.#pump();
    }, dueMs - performance.now());
    this.#silenceTimer = { timer, dueMs };
  }

  #acquire(ticket: FetchTicket, signal?: AbortSignal): Promise<FetchPriority> {
    signal?.throwIfAborted();
    const priority = ticket.priority;
    const ahead = ORDER.slice(0, ORDER.indexOf(priority) + 1).some((p) => this.#queues[p].length > 0);
    const sinceMs = performance.now();
    if (!ahead && this.#canStart(priority, sinceMs)) {
      this.#take(priority);
      return Promise.resolve(priority);
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        priority,
        sinceMs,
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
    else {
      this.#busyRunning++;
      this.#lastBusyMs = performance.now();
    }
  }

  #release(priority: FetchPriority): void {
    this.#running--;
    if (priority === 'foreground') this.#foregroundRunning--;
    if (priority === 'background') this.#backgroundRunning--;
    else {
      this.#busyRunning--;
      this.#lastBusyMs = performance.now();
    }
    this.#pump();
  }

  #pump(): void {
    for (const p of ORDER) {
      const queue = this.#queues[p];
      while (queue.length > 0) {
        // a queued foreground waiter counts as active; it leaves the queue as it takes the slot
        if (!this.#canStart(p, queue[0]!.sinceMs)) break;
        const w = queue.shift()!;
        this.#take(p);
        w.start(p);
      }
    }
    if (this.#queues.background.length === 0 && this.#silenceTimer !== undefined) {
      clearTimeout(this.#silenceTimer.timer);
      this.#silenceTimer = undefined;
    }
    if (this.foregroundActive === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
