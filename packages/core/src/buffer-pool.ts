/**
 * Reusable byte buffers for bytes that only pass through (range reads, span-decode input). A fresh
 * allocation costs a page fault per 4 KiB on first touch, on the thread that touches it: on this
 * project's 2-vCPU VMs filling 1 MiB of fresh memory took 3.6 ms, reusing it 0.05 ms.
 */
export class BufferPool {
  readonly #free: Uint8Array[] = [];
  #bytes = 0;

  /**
   * @param maxPoolBytes most bytes kept for reuse (the oldest buffers go first)
   * @param maxBufferBytes larger requests get a buffer of their own that is not kept
   * @param roundBytes new buffers are rounded up to a multiple of this, so they fit later requests
   */
  constructor(
    readonly maxPoolBytes: number,
    readonly maxBufferBytes: number,
    readonly roundBytes = 256 * 1024,
  ) {}

  /** A buffer of at least `size` bytes (contents undefined). Give it back with {@link give} once nothing uses it. */
  take(size: number): Uint8Array {
    const i = this.#free.findIndex((b) => b.byteLength >= size);
    if (i >= 0) {
      const b = this.#free.splice(i, 1)[0]!;
      this.#bytes -= b.byteLength;
      return b;
    }
    return new Uint8Array(size > this.maxBufferBytes ? size : Math.ceil(size / this.roundBytes) * this.roundBytes);
  }

  /** Returns a buffer for reuse. */
  give(buffer: Uint8Array): void {
    if (buffer.byteLength > this.maxBufferBytes || buffer.byteLength > this.maxPoolBytes) return;
    while (this.#free.length > 0 && this.#bytes + buffer.byteLength > this.maxPoolBytes) this.#bytes -= this.#free.shift()!.byteLength;
    this.#free.push(buffer);
    this.#bytes += buffer.byteLength;
  }

}
