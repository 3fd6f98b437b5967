/**
 * A clock whose time moves only when the test says so. Timers fire, in due order, inside `advance()`.
 * Satisfies @imgstream/k8s-events' `Clock` (and any `{ now, setTimeout, clearTimeout }` clock option).
 */
export class ManualClock {
  #now: number;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();
  #onTimer: Array<() => void> = [];

  constructor(startMs = Date.UTC(2026, 10, 22, 12, 0, 0)) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    const waiters = this.#onTimer;
    this.#onTimer = [];
    for (const w of waiters) w();
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Milliseconds until the next timer fires, or undefined when none is set. */
  nextDelayMs(): number | undefined {
    let next: number | undefined;
    for (const t of this.#timers.values()) if (next === undefined || t.at < next) next = t.at;
    return next === undefined ? undefined : next - this.#now;
  }

  /** Moves time forward by `ms`, firing due timers in order. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      let dueId: number | undefined;
      let due: { at: number; fn: () => void } | undefined;
      for (const [id, t] of this.#timers) if (t.at <= target && (due === undefined || t.at < due.at)) [dueId, due] = [id, t];
      if (due === undefined || dueId === undefined) break;
      this.#timers.delete(dueId);
      this.#now = Math.max(this.#now, due.at);
      due.fn();
    }
    this.#now = target;
  }

  /** Moves time to the next timer and fires it. Returns the ms advanced. */
  advanceToNext(): number {
    const delay = this.nextDelayMs();
    if (delay === undefined) throw new Error('no timer pending');
    this.advance(delay);
    return delay;
  }

  /** Resolves once at least one timer is pending (waits for real I/O to schedule one; bounded). */
  async waitForTimer(timeoutMs = 5000): Promise<void> {
    if (this.#timers.size > 0) return;
    await new Promise<void>((resolve, reject) => {
      const guard = setTimeout(() => reject(new Error(`no timer was set within ${timeoutMs} ms`)), timeoutMs);
      this.#onTimer.push(() => {
        clearTimeout(guard);
        resolve();
      });
    });
  }
}
