import type { Digest } from '../digest.js';

/** A range held by {@link PinnedFileRanges} (to fill it in, or remove it again). */
export interface PinnedRange {
  readonly offset: number;
  readonly length: number;
}

interface Range extends PinnedRange {
  readonly key: string;
  bytes: Uint8Array | undefined;
  /** Resolves when the bytes are in, or the range is removed. */
  readonly ready: Promise<void>;
  settle: () => void;
  /** Whether a reader should wait for the bytes instead of reading elsewhere (they come soon). */
  soon: () => boolean;
  read: boolean;
}

/**
 * File ranges held in memory (a replayed prefetch pack), served to reads before the block
 * fetcher. A range is announced first ({@link expect}) and filled in when its bytes arrive
 * ({@link fill}); a read that ranges hold whole (one, or adjacent ones) is answered from
 * them, waiting for their bytes when they come soon. Other reads go to the fetcher.
 */
export class PinnedFileRanges {
  readonly #byFile = new Map<string, Range[]>();
  #bytes = 0;
  #ranges = 0;

  /** Decoded bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Ranges announced or held. */
  get size(): number {
    return this.#ranges;
  }

  /** Announces a range whose bytes come later; `soon` tells a reader whether to wait for them. */
  expect(layerDigest: Digest, path: string, offset: number, length: number, soon: () => boolean): PinnedRange {
    const key = `${layerDigest}\0${path}`;
    let settle!: () => void;
    const ready = new Promise<void>((resolve) => (settle = resolve));
    const range: Range = { key, offset, length, bytes: undefined, ready, settle, soon, read: false };
    const list = this.#byFile.get(key);
    if (list === undefined) this.#byFile.set(key, [range]);
    else list.push(range);
    this.#ranges++;
    return range;
  }

  /** The bytes of an announced range (`length` of them). */
  fill(range: PinnedRange, bytes: Uint8Array): void {
    const r = range as Range;
    if (r.bytes !== undefined || !this.#byFile.get(r.key)?.includes(r)) return;
    r.bytes = bytes;
    this.#bytes += bytes.byteLength;
    r.settle();
  }

  /**
   * Copies `target.byteLength` bytes at `offset` of the file into `target` when ranges hold them
   * all, one range or adjacent ones (true). When some of those ranges' bytes have not arrived but
   * come soon: a promise that settles when they did (or never will); ask again then. Undefined:
   * read them elsewhere.
   */
  readInto(layerDigest: Digest, path: string, offset: number, target: Uint8Array): true | Promise<void> | undefined {
    const list = this.#byFile.get(`${layerDigest}\0${path}`);
    if (list === undefined) return undefined;
    const end = offset + target.byteLength;
    const parts: Range[] = [];
    for (let at = offset; at < end || parts.length === 0; ) {
      const r = list.find((x) => at >= x.offset && at < x.offset + x.length);
      if (r === undefined) return undefined;
      parts.push(r);
      at = r.offset + r.length;
    }
    const waiting = parts.filter((r) => r.bytes === undefined);
    if (waiting.length > 0) return waiting.every((r) => r.soon()) ? Promise.all(waiting.map((r) => r.ready)).then(() => undefined) : undefined;
    for (const r of parts) {
      const from = Math.max(offset, r.offset);
      const to = Math.min(end, r.offset + r.length);
      target.set(r.bytes!.subarray(from - r.offset, to - r.offset), from - offset);
      r.read = true;
    }
    return true;
  }

  /** Whether a read was answered from this range. */
  wasRead(range: PinnedRange): boolean {
    return (range as Range).read;
  }

  /** Drops ranges (readers waiting for their bytes read elsewhere). */
  remove(ranges: Iterable<PinnedRange>): void {
    for (const range of ranges) {
      const r = range as Range;
      const list = this.#byFile.get(r.key);
      const i = list?.indexOf(r) ?? -1;
      if (list === undefined || i < 0) continue;
      list.splice(i, 1);
      if (list.length === 0) this.#byFile.delete(r.key);
      this.#ranges--;
      if (r.bytes !== undefined) this.#bytes -= r.bytes.byteLength;
      r.settle();
    }
  }
}
