/** Exponential backoff settings shared by the reporter and the node labeler. */
export interface BackoffOptions {
  /** First delay (ms). */
  initialDelayMs: number;
  /** Largest delay (ms). */
  maxDelayMs: number;
  /** Random spread added on top of each delay, as a fraction of it (0 = none). */
  jitter: number;
}

/** The delay before retry number `failures` (1 = after the first failure). */
export function backoffDelayMs(failures: number, options: BackoffOptions, random: () => number = Math.random): number {
  const exponent = Math.max(0, failures - 1);
  const base = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** Math.min(exponent, 30));
  return Math.round(base * (1 + options.jitter * random()));
}
