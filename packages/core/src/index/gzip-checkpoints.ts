import { ZStream, Z_BLOCK, Z_BUF_ERROR, Z_NO_FLUSH, Z_OK, Z_STREAM_END, zlibInflate, zlibInflateInit2, zlibInflateReset, zlibInflateSetDictionary } from 'pako';
import { createHash, type Hash } from 'node:crypto';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { Digest } from '../digest.js';

/** Size of a deflate window: the back-reference distance a restart point must carry. */
export const WINDOW_BYTES = 32768;

/**
 * A restart point in a gzip stream (zran): where inflation can start without reading what came
 * before. `member` checkpoints sit at the start of a gzip member (no window, no bits); the others
 * sit at a deflate block boundary inside a member.
 */
export interface GzipCheckpoint {
  /** Offset of the first whole compressed byte after the boundary. */
  readonly compressedOffset: number;
  /** Number of bits (0-7) of the byte before `compressedOffset` that belong to the next block. */
  readonly bits: number;
  /** Offset in the uncompressed stream. */
  readonly uncompressedOffset: number;
  /** True at the start of a gzip member. */
  readonly member: boolean;
  /** The up to 32 KiB of uncompressed data before the boundary (empty for member checkpoints). */
  readonly window: Uint8Array;
}

/** A span between two checkpoints: one block of the zran index. */
export interface GzipSpan extends GzipCheckpoint {
  /** First compressed byte to fetch (the partial byte before `compressedOffset` when `bits > 0`). */
  readonly fetchOffset: number;
  /** Compressed bytes to fetch. */
  readonly fetchSize: number;
  /** Uncompressed bytes the span decodes to. */
  readonly uncompressedSize: number;
  /** sha256 of the fetched compressed bytes. */
  readonly digest: Digest;
}

/** Limits that bound decompression. */
export interface InflateLimits {
  /** Maximum total uncompressed bytes. */
  maxUncompressedBytes: number;
  /** Maximum uncompressed/compressed ratio, enforced once more than `ratioFloorBytes` were produced. */
  maxRatio: number;
  ratioFloorBytes: number;
}

function corrupt(message: string, offset?: number): ImgstreamError {
  return new ImgstreamError(ErrorCode.CORRUPT_DATA, `gzip: ${message}`, offset !== undefined ? { offset } : {});
}

const OUT_CHUNK = 65536;

/** What one indexing pass found out about the gzip stream. */
export interface GzipScanResult {
  spans: GzipSpan[];
  compressedSize: number;
  uncompressedSize: number;
  digest: Digest;
}

/**
 * Inflates a gzip stream (one or more members), yielding the uncompressed bytes, and records a
 * checkpoint roughly every `spanBytes` of output. `result` is filled when the iteration ends.
 * Corrupt or truncated input -> IMGSTREAM_CORRUPT_DATA; limits -> IMGSTREAM_LIMIT_EXCEEDED.
 */
export async function* inflateWithCheckpoints(
  source: AsyncIterable<Uint8Array>,
  spanBytes: number,
  limits: InflateLimits,
  result: Partial<GzipScanResult>,
): AsyncGenerator<Uint8Array, void, undefined> {
  const strm = new ZStream();
  zlibInflateInit2(strm, 31);
  const out = new Uint8Array(OUT_CHUNK);
  strm.output = out;
  strm.next_out = 0;
  strm.avail_out = OUT_CHUNK;
  const window = new Uint8Array(WINDOW_BYTES);
  let windowLen = 0;
  const whole = createHash('sha256');
  let consumed = 0; // compressed bytes consumed
  let produced = 0;
  let atMemberStart = true; // before the first header byte of a member
  const checkpoints: GzipCheckpoint[] = [{ compressedOffset: 0, bits: 0, uncompressedOffset: 0, member: true, window: new Uint8Array(0) }];
  const spanHashes: Hash[] = [createHash('sha256')];
  let lastByte = 0;
  let sawInput = false;

  const pushWindow = (data: Uint8Array): void => {
    if (data.byteLength >= WINDOW_BYTES) {
      window.set(data.subarray(data.byteLength - WINDOW_BYTES));
      windowLen = WINDOW_BYTES;
      return;
    }
    const keep = Math.min(windowLen, WINDOW_BYTES - data.byteLength);
    window.copyWithin(0, windowLen - keep, windowLen);
    window.set(data, keep);
    windowLen = keep + data.byteLength;
  };
  const checkLimits = (): void => {
    if (produced > limits.maxUncompressedBytes) {
      throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `gzip stream decompresses to more than ${limits.maxUncompressedBytes} bytes`, { limit: limits.maxUncompressedBytes });
    }
    if (produced > limits.ratioFloorBytes && produced > limits.maxRatio * Math.max(consumed, 1)) {
      throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `gzip stream expands more than ${limits.maxRatio}:1 (decompression bomb?)`, { limit: limits.maxRatio });
    }
  };
  const addCheckpoint = (cp: GzipCheckpoint): void => {
    checkpoints.push(cp);
    spanHashes.push(createHash('sha256'));
    if (cp.bits > 0) spanHashes[spanHashes.length - 1]?.update(Uint8Array.of(lastByte));
  };

  for await (const chunk of source) {
    if (chunk.byteLength === 0) continue;
    sawInput = true;
    whole.update(chunk);
    strm.input = chunk;
    strm.next_in = 0;
    strm.avail_in = chunk.byteLength;
    while (strm.avail_in > 0) {
      if (atMemberStart) {
        const b0 = chunk[strm.next_in];
        if (b0 !== 0x1f) throw corrupt('data after the last gzip member is not a gzip member', consumed);
        atMemberStart = false;
      }
      const before = strm.next_in;
      const ret = zlibInflate(strm, Z_BLOCK);
      const used = strm.next_in - before;
      if (used > 0) {
        spanHashes[spanHashes.length - 1]?.update(chunk.subarray(before, strm.next_in));
        lastByte = chunk[strm.next_in - 1] ?? 0;
        consumed += used;
      }
      if (strm.next_out > 0) {
        const data = out.slice(0, strm.next_out);
        produced += data.byteLength;
        pushWindow(data);
        strm.next_out = 0;
        strm.avail_out = OUT_CHUNK;
        checkLimits();
        yield data;
      }
      if (ret === Z_STREAM_END) {
        zlibInflateReset(strm);
        strm.output = out;
        strm.next_out = 0;
        strm.avail_out = OUT_CHUNK;
        atMemberStart = true;
        const last = checkpoints[checkpoints.length - 1];
        if (last !== undefined && produced - last.uncompressedOffset >= spanBytes) {
          addCheckpoint({ compressedOffset: consumed, bits: 0, uncompressedOffset: produced, member: true, window: new Uint8Array(0) });
        }
        continue;
      }
      if (ret === Z_BUF_ERROR) break;
      if (ret !== Z_OK) throw corrupt(`invalid compressed data (${strm.msg || `code ${ret}`})`, consumed);
      const dt = strm.data_type;
      if ((dt & 128) !== 0 && (dt & 64) === 0) {
        const last = checkpoints[checkpoints.length - 1];
        if (last !== undefined && produced - last.uncompressedOffset >= spanBytes) {
          addCheckpoint({ compressedOffset: consumed, bits: dt & 7, uncompressedOffset: produced, member: false, window: window.slice(0, windowLen) });
        }
      }
    }
  }
  if (!sawInput) throw corrupt('empty stream', 0);
  if (!atMemberStart) throw corrupt('unexpected end of stream (truncated gzip member)', consumed);
  // a checkpoint placed at the very end (after the last member) would be an empty span
  const lastCp = checkpoints[checkpoints.length - 1];
  if (checkpoints.length > 1 && lastCp !== undefined && lastCp.uncompressedOffset === produced) {
    checkpoints.pop();
    spanHashes.pop();
  }
  const spans: GzipSpan[] = [];
  for (let i = 0; i < checkpoints.length; i++) {
    const cp = checkpoints[i] as GzipCheckpoint;
    const next = checkpoints[i + 1];
    const fetchOffset = cp.compressedOffset - (cp.bits > 0 ? 1 : 0);
    const end = next === undefined ? consumed : next.compressedOffset;
    const hash = spanHashes[i] as Hash;
    spans.push({
      ...cp,
      fetchOffset,
      fetchSize: end - fetchOffset,
      uncompressedSize: (next === undefined ? produced : next.uncompressedOffset) - cp.uncompressedOffset,
      digest: `sha256:${hash.digest('hex')}`,
    });
  }
  result.spans = spans;
  result.compressedSize = consumed;
  result.uncompressedSize = produced;
  result.digest = `sha256:${whole.digest('hex')}`;
}

/**
 * Decodes one span from exactly its fetched compressed bytes, restarting inflation at its
 * checkpoint (priming the partial byte's bits and the 32 KiB window). Crosses gzip member
 * boundaries. Throws IMGSTREAM_CORRUPT_DATA when the bytes do not decode to `uncompressedSize`.
 */
export function inflateSpan(data: Uint8Array, span: Pick<GzipSpan, 'bits' | 'member' | 'window' | 'uncompressedSize' | 'fetchOffset'>): Uint8Array {
  const size = span.uncompressedSize;
  const out = new Uint8Array(size);
  let strm = new ZStream();
  let pos = 0;
  let raw = false;
  if (span.member) {
    zlibInflateInit2(strm, 31);
  } else {
    raw = true;
    zlibInflateInit2(strm, -15);
    if (span.bits > 0) {
      if (data.byteLength < 1) throw corrupt('span is empty', span.fetchOffset);
      // what zlib's inflatePrime(strm, bits, value) does on a fresh stream
      const state = strm.state as { hold: number; bits: number };
      state.hold = (data[0] ?? 0) >> (8 - span.bits);
      state.bits = span.bits;
      pos = 1;
    }
    if (span.window.byteLength > 0 && zlibInflateSetDictionary(strm, span.window) !== Z_OK) throw corrupt('cannot set the window', span.fetchOffset);
  }
  let produced = 0;
  const feed = (): void => {
    strm.input = data;
    strm.next_in = pos;
    strm.avail_in = data.byteLength - pos;
    strm.output = out;
    strm.next_out = produced;
    strm.avail_out = size - produced;
  };
  feed();
  while (produced < size) {
    const ret = zlibInflate(strm, Z_NO_FLUSH);
    produced = strm.next_out;
    pos = strm.next_in;
    if (produced >= size) break;
    if (ret === Z_STREAM_END) {
      // end of a member: skip the trailer if inflating raw, then continue with the next member
      if (raw) pos += 8;
      if (pos >= data.byteLength) break;
      strm = new ZStream();
      zlibInflateInit2(strm, 31);
      raw = false;
      feed();
      continue;
    }
    if (ret === Z_BUF_ERROR) break;
    if (ret !== Z_OK) throw corrupt(`invalid compressed data in the span (${strm.msg || `code ${ret}`})`, span.fetchOffset);
    if (strm.avail_in === 0) break;
  }
  if (produced !== size) throw corrupt(`span decoded to ${produced} bytes, expected ${size}`, span.fetchOffset);
  return out;
}
