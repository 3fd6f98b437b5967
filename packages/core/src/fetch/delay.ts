import { setTimeout as sleep } from 'node:timers/promises';

/** Waits `ms`; rejects with `signal.reason` (unchanged) when aborted. */
export async function delay(ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  try {
    await sleep(ms, undefined, signal === undefined ? undefined : { signal });
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    throw err;
  }
}
