import type { RangeReader } from '../blob.js';
import type { Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';

/** Where a {@link RegistryBlobReader} gets its bytes from (the registry client). */
export interface RangeSource {
  readBlobRange(offset: number, length: number, signal: AbortSignal | undefined, buffer?: Uint8Array): Promise<Uint8Array>;
}

/**
 * Random access to one registry blob with HTTP Range requests over the client's pooled
 * connections and cached token. The bytes are not verified here (a range cannot be checked
 * against the blob digest); callers verify blocks against their own digests.
 */
export class RegistryBlobReader implements RangeReader {
  readonly size: number;
  readonly digest: Digest;
  readonly #source: RangeSource;

  constructor(source: RangeSource, digest: Digest, size: number) {
    this.#source = source;
    this.digest = digest;
    this.size = size;
  }

  async readRange(offset: number, length: number, options: { signal?: AbortSignal; buffer?: Uint8Array } = {}): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new ImgstreamError(ErrorCode.INVALID_OPTION, `readRange(${offset}, ${length}): offset and length must be non-negative integers`, {
        option: 'range',
        digest: this.digest,
      });
    }
    options.signal?.throwIfAborted();
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return new Uint8Array(0);
    return this.#source.readBlobRange(offset, end - offset, options.signal, options.buffer);
  }
}
