/** Random access to the bytes of one blob (a registry blob, a local file, a cache entry). */
export interface RangeReader {
  /** Size of the blob in bytes. */
  readonly size: number;
  /**
   * Reads `length` bytes starting at `offset`. Resolves with exactly `length` bytes, or with
   * fewer only when the range runs past the end of the blob. Rejects with `signal.reason`
   * when aborted.
   */
  readRange(offset: number, length: number, options?: { signal?: AbortSignal }): Promise<Uint8Array>;
}
