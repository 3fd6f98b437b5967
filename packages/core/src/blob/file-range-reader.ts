import { open, type FileHandle } from 'node:fs/promises';
import type { RangeReader } from '../blob.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import { checkRange } from './buffer-range-reader.js';

/** A {@link RangeReader} over a local file. Open with {@link FileRangeReader.open}; `close()` when done. */
export class FileRangeReader implements RangeReader {
  readonly size: number;
  readonly #fh: FileHandle;
  #closed = false;

  private constructor(fh: FileHandle, size: number) {
    this.#fh = fh;
    this.size = size;
  }

  static async open(path: string): Promise<FileRangeReader> {
    const fh = await open(path, 'r');
    try {
      const st = await fh.stat();
      return new FileRangeReader(fh, st.size);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async readRange(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    if (this.#closed) throw new ImgstreamError(ErrorCode.CLOSED, 'FileRangeReader is closed');
    options.signal?.throwIfAborted();
    checkRange(offset, length);
    const want = Math.max(0, Math.min(length, this.size - offset));
    const buf = new Uint8Array(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.#fh.read(buf, got, want - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    options.signal?.throwIfAborted();
    return got === want ? buf : buf.subarray(0, got);
  }

  /** Streams `[offset, offset+length)` in chunks (e.g. to build an index from a local blob). */
  async *stream(chunkBytes = 1 << 20, offset = 0, length = this.size - offset): AsyncGenerator<Uint8Array> {
    let p = offset;
    const end = offset + length;
    while (p < end) {
      const chunk = await this.readRange(p, Math.min(chunkBytes, end - p));
      if (chunk.byteLength === 0) break;
      p += chunk.byteLength;
      yield chunk;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#fh.close();
  }
}
