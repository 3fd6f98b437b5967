import { constants, gunzip, inflateRaw, type InputType, type ZlibOptions } from 'node:zlib';
import { channel, publish } from '../diagnostics.js';
import { BufferPool } from '../buffer-pool.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import { inflateSpan, type GzipSpan } from './gzip-checkpoints.js';

const fallbackChannel = channel('core:inflate-fallback');

/** What a span decode needs to know about where it starts. */
export type SpanStart = Pick<GzipSpan, 'bits' | 'member' | 'window' | 'uncompressedSize' | 'fetchOffset'>;

/**
 * Decodes one zran span (or one eStargz chunk) with Node's native zlib on the libuv thread pool,
 * so a FUSE server's event loop keeps answering while blocks are inflated, at native speed.
 *
 * zlib cannot be primed with a bit offset through Node's API, so the restart state is given to it
 * as deflate data instead: a synthetic raw deflate prefix of fixed-Huffman blocks that (1) emits
 * the span's 32 KiB window as literals, so back references resolve against it, and (2) ends at
 * exactly the bit position where the span's first block starts inside its first fetched byte.
 * Inflating `prefix + span bytes` yields `padding + window + span`; the first two are dropped.
 *
 * The rare span that crosses the end of a gzip member in the middle (multi-member blobs) is
 * decoded by the portable {@link inflateSpan} (announced on the diagnostics channel
 * `imgstream:core:inflate-fallback`). Corrupt data -> IMGSTREAM_CORRUPT_DATA.
 */
export async function inflateSpanNative(data: Uint8Array, span: SpanStart): Promise<Uint8Array> {
  const size = span.uncompressedSize;
  if (span.member) {
    const out = await zlibCall(gunzip, data, size + 1, span.fetchOffset);
    if (out.byteLength === size) return out;
    return portable(data, span);
  }
  const body = span.bits > 0 ? data.subarray(1) : data;
  const input = scratch.take(prefixCapacity(span.window) + body.byteLength);
  try {
    const { bytes: prefix, skip } = restartPrefix(span.window, span.bits, data[0] ?? 0, input);
    input.set(body, prefix.byteLength);
    const out = await zlibCall(inflateRaw, input.subarray(0, prefix.byteLength + body.byteLength), skip + size + 1, span.fetchOffset);
    // shorter: the span runs into a following gzip member, which a raw inflate stops at
    if (out.byteLength !== skip + size) return portable(data, span);
    return out.subarray(skip);
  } finally {
    scratch.give(input);
  }
}

/** Reused input buffers of span decodes (prefix + span bytes): up to 16 MiB kept. */
const scratch = new BufferPool(16 * 1024 * 1024, 8 * 1024 * 1024);

/** Bytes a restart prefix for this window takes at most (9 bits per literal, 7 padding literals, block headers). */
function prefixCapacity(window: Uint8Array): number {
  return Math.ceil((window.byteLength * 9 + 9 * 7 + 2 * 10) / 8) + 2;
}

/** The portable decoder, for spans that cross into the next gzip member (published as `imgstream:core:inflate-fallback`). */
function portable(data: Uint8Array, span: SpanStart): Uint8Array {
  publish(fallbackChannel, { fetchOffset: span.fetchOffset, uncompressedSize: span.uncompressedSize });
  return inflateSpan(data, span);
}

type ZlibFn = (buf: InputType, options: ZlibOptions, callback: (error: Error | null, result: Buffer) => void) => void;

/** One zlib call that tolerates input ending mid-stream; output chunk sized so it is one thread-pool round. */
function zlibCall(fn: ZlibFn, input: Uint8Array, expectedBytes: number, fetchOffset: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const options: ZlibOptions = {
      finishFlush: constants.Z_SYNC_FLUSH,
      chunkSize: Math.max(64 * 1024, Math.min(expectedBytes, 64 * 1024 * 1024)),
    };
    fn(input, options, (err, result) => {
      if (err !== null) {
        reject(new ImgstreamError(ErrorCode.CORRUPT_DATA, `gzip: invalid compressed data in the span (${err.message})`, { offset: fetchOffset, cause: err }));
      } else {
        resolve(new Uint8Array(result.buffer, result.byteOffset, result.byteLength));
      }
    });
  });
}

/** Bit lengths of the literals 0..255 in deflate's fixed Huffman code. */
const LITERAL_BITS = Uint8Array.from({ length: 256 }, (_v, b) => (b < 144 ? 8 : 9));

/** The fixed Huffman codes of the literals 0..255, bit-reversed (ready for the LSB-first writer). */
const LITERAL_CODES = Uint16Array.from({ length: 256 }, (_v, b) => {
  const [code, count] = b < 144 ? [0x30 + b, 8] : [0x190 + b - 144, 9];
  let reversed = 0;
  for (let i = 0; i < count; i++) reversed |= ((code >> i) & 1) << (count - 1 - i);
  return reversed;
});

/** Writes deflate's LSB-first bit stream. */
class BitWriter {
  #bytes: Uint8Array;
  #length = 0;
  #hold = 0;
  #bits = 0;

  /** Writes into `into` when given (it must hold `capacity` bytes). */
  constructor(capacity: number, into?: Uint8Array) {
    this.#bytes = into !== undefined && into.byteLength >= capacity ? into : new Uint8Array(capacity);
  }

  /** `count` bits of `value`, least significant first (header fields). */
  bits(value: number, count: number): void {
    this.#hold |= value << this.#bits;
    this.#bits += count;
    while (this.#bits >= 8) {
      this.#bytes[this.#length++] = this.#hold & 0xff;
      this.#hold >>>= 8;
      this.#bits -= 8;
    }
  }

  /** A Huffman code of `count` bits, most significant bit first (as deflate stores codes). */
  code(code: number, count: number): void {
    let reversed = 0;
    for (let i = 0; i < count; i++) reversed |= ((code >> i) & 1) << (count - 1 - i);
    this.bits(reversed, count);
  }

  /** Bytes as fixed-Huffman literals (the hot loop of a restart prefix: 32 KiB per span). */
  literals(bytes: Uint8Array): void {
    const out = this.#bytes;
    let hold = this.#hold;
    let bits = this.#bits;
    let length = this.#length;
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      hold |= LITERAL_CODES[b]! << bits; // fewer than 8 bits carried + at most 9
      bits += LITERAL_BITS[b]!;
      while (bits >= 8) {
        out[length++] = hold & 0xff;
        hold >>>= 8;
        bits -= 8;
      }
    }
    this.#hold = hold;
    this.#bits = bits;
    this.#length = length;
  }

  get bitLength(): number {
    return this.#length * 8 + this.#bits;
  }

  /** The written bytes; a partial last byte is OR'd with `fill` (its high bits). */
  finish(fill: number): Uint8Array {
    if (this.#bits > 0) this.#bytes[this.#length++] = (this.#hold & ((1 << this.#bits) - 1)) | (fill & ~((1 << this.#bits) - 1) & 0xff);
    return this.#bytes.subarray(0, this.#length);
  }
}

/** A non-final fixed-Huffman block holding `literals`. */
function writeFixedBlock(w: BitWriter, literals: Uint8Array): void {
  w.bits(0, 1); // BFINAL = 0
  w.bits(1, 2); // BTYPE = 01, fixed Huffman codes
  w.literals(literals);
  w.code(0, 7); // end of block (256)
}

/**
 * The synthetic deflate prefix for a restart at a checkpoint: `skip` output bytes (padding
 * literals, then the window), ending `bits` bits short of a whole byte; the partial byte's high
 * `bits` bits are taken from `firstByte` (the fetched byte the span's first block starts in).
 * Written at the start of `into` when it is large enough.
 */
export function restartPrefix(window: Uint8Array, bits: number, firstByte: number, into?: Uint8Array): { bytes: Uint8Array; skip: number } {
  let windowBits = 10;
  for (let i = 0; i < window.length; i++) windowBits += LITERAL_BITS[window[i]!]!;
  // padding block: 10 + 9 * n bits; n in 0..7 reaches every residue mod 8
  const target = (8 - bits) % 8;
  let pad = 0;
  while ((10 + 9 * pad + windowBits) % 8 !== target) pad++;
  const w = new BitWriter(Math.ceil((10 + 9 * pad + windowBits) / 8) + 1, into);
  writeFixedBlock(w, new Uint8Array(pad).fill(144));
  writeFixedBlock(w, window);
  const bytes = w.finish(bits > 0 ? firstByte : 0);
  return { bytes, skip: pad + window.byteLength };
}
