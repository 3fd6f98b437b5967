/**
 * Pull-based reader over an async byte source: reads exact lengths, skips, and counts the
 * position in the stream. Used by the tar reader; keeps at most one source chunk buffered.
 */
export class ByteReader {
  readonly #it: AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
  #buf: Uint8Array = new Uint8Array(0);
  #pos = 0;
  #done = false;
  /** Bytes consumed from the stream so far (the offset of the next byte). */
  position = 0;

  constructor(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>) {
    this.#it = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
  }

  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#buf.byteLength) {
      if (this.#done) return false;
      const r = await this.#it.next();
      if (r.done === true) {
        this.#done = true;
        return false;
      }
      this.#buf = r.value;
      this.#pos = 0;
    }
    return true;
  }

  /** Reads exactly `n` bytes; returns fewer only at the end of the stream. */
  async read(n: number): Promise<Uint8Array> {
    if (n === 0) return new Uint8Array(0);
    if (!(await this.#fill())) return new Uint8Array(0);
    const avail = this.#buf.byteLength - this.#pos;
    if (avail >= n) {
      const out = this.#buf.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      this.position += n;
      return out;
    }
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n && (await this.#fill())) {
      const take = Math.min(n - got, this.#buf.byteLength - this.#pos);
      out.set(this.#buf.subarray(this.#pos, this.#pos + take), got);
      this.#pos += take;
      got += take;
      this.position += take;
    }
    return got === n ? out : out.subarray(0, got);
  }

  /** Up to `max` bytes (at least 1 unless at the end), without copying when possible. */
  async readSome(max: number): Promise<Uint8Array> {
    if (max === 0 || !(await this.#fill())) return new Uint8Array(0);
    const take = Math.min(max, this.#buf.byteLength - this.#pos);
    const out = this.#buf.subarray(this.#pos, this.#pos + take);
    this.#pos += take;
    this.position += take;
    return out;
  }

  /** Skips up to `n` bytes; returns how many were skipped. */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0 && (await this.#fill())) {
      const take = Math.min(left, this.#buf.byteLength - this.#pos);
      this.#pos += take;
      left -= take;
      this.position += take;
    }
    return n - left;
  }

  /** Consumes the rest of the stream; returns the number of bytes. */
  async drain(): Promise<number> {
    let n = 0;
    while (await this.#fill()) {
      n += this.#buf.byteLength - this.#pos;
      this.position += this.#buf.byteLength - this.#pos;
      this.#pos = this.#buf.byteLength;
    }
    return n;
  }

  /** Stops the underlying source early. */
  async close(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      await this.#it.return?.();
    }
  }
}
