/** Random access to the bytes of one blob (a registry blob, a local file, a cache entry). */
export interface RangeReader {
  /** Size of the blob in bytes. */
  readonly size: number;
  /**
   * Reads `length` bytes starting at `offset`. Resolves with exactly `length` bytes, or with
   * fewer only when the range runs past the end of the blob. Rejects with `signal.reason`
   * when aborted. `buffer`: memory of at least `length` bytes the reader may fill and return a
   * view of instead of allocating (the caller reuses it once the promise settled); readers may
   * ignore it.
   */
  readRange(offset: number, length: number, options?: { signal?: AbortSignal; buffer?: Uint8Array }): Promise<Uint8Array>;
}
