import type { RangeReader } from '../blob.js';
import { ErrorCode, ImgstreamError } from '../errors.js';

export function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new ImgstreamError(ErrorCode.RANGE_NOT_SATISFIABLE, `invalid range offset=${offset} length=${length}`, { range: { offset, length } });
  }
}

/** A {@link RangeReader} over bytes in memory. */
export class BufferRangeReader implements RangeReader {
  readonly #data: Uint8Array;

  constructor(data: Uint8Array) {
    this.#data = data;
  }

  get size(): number {
    return this.#data.byteLength;
  }

  async readRange(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    options.signal?.throwIfAborted();
    checkRange(offset, length);
    return this.#data.slice(offset, Math.min(offset + length, this.#data.byteLength));
  }
}
