import { gunzipSync, gzipSync } from 'node:zlib';
import { defaults } from '../defaults.js';
import { isDigest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import { WINDOW_BYTES } from './gzip-checkpoints.js';
import type { EntryType } from './model.js';
import { StreamLayerIndex, type StreamBlock, type StreamEntry, type StreamIndexData } from './stream-layer-index.js';

/** Media type of a serialised zran/raw index blob (see docs/index-format.md). */
export const INDEX_MEDIA_TYPE = 'application/vnd.imgstream.layer-index.v1+gzip';
/** Artifact type of the OCI artifact that carries the indexes of an image's layers. */
export const INDEX_ARTIFACT_TYPE = 'application/vnd.imgstream.index.v1';

const MAGIC = new TextEncoder().encode('IMGSTRIX');
const VERSION = 1;

/** Limits applied when parsing a serialised index. */
export interface ParseIndexOptions {
  /** Largest serialised (compressed) index in bytes. Default `defaults.index.maxIndexBytes`. */
  maxIndexBytes?: number;
  /** Largest decompressed index in bytes. Default `defaults.index.maxDecodedIndexBytes`. */
  maxDecodedIndexBytes?: number;
  /** Largest number of entries or blocks. Default `defaults.index.maxIndexEntries`. */
  maxEntries?: number;
  /** Largest decoded size of one block, in bytes. Default `defaults.index.maxBlockBytes`. */
  maxBlockBytes?: number;
  /** When given, the index must be for this layer. */
  expectedLayerDigest?: Digest;
}

const b64 = (u: Uint8Array): string => Buffer.from(u).toString('base64');

/** Serialises a zran/raw index: gzip( "IMGSTRIX" | u32 version | u32 headerLength | header JSON | windows ). */
export function serialiseIndex(data: StreamIndexData): Uint8Array {
  const windows: Uint8Array[] = [];
  const header = {
    format: data.format,
    layerDigest: data.layerDigest,
    layerSize: data.layerSize,
    uncompressedSize: data.uncompressedSize,
    spanBytes: data.spanBytes,
    blocks: data.blocks.map((b) => {
      const w = b.window ?? new Uint8Array(0);
      if (w.byteLength > 0) windows.push(w);
      return [b.fetchOffset, b.fetchSize, b.uncompressedOffset, b.uncompressedSize, b.digest.slice(7), b.bits ?? 0, b.member === true ? 1 : 0, w.byteLength];
    }),
    entries: data.entries.map((e) => ({
      p: e.path,
      t: e.type,
      m: e.mode,
      u: e.uid,
      g: e.gid,
      mt: e.mtimeMs,
      ...(e.size !== 0 ? { s: e.size } : {}),
      ...(e.linkTarget !== undefined ? { l: e.linkTarget } : {}),
      ...(e.devMajor !== undefined ? { dv: [e.devMajor, e.devMinor ?? 0] } : {}),
      ...(e.xattrs !== undefined && e.xattrs.size > 0 ? { x: Object.fromEntries([...e.xattrs].map(([k, v]) => [k, b64(v)])) } : {}),
      ...(e.opaque === true ? { o: 1 } : {}),
      ...(e.regions !== undefined && e.regions.length > 0 ? { r: e.regions.flatMap((r) => [r.fileOffset, r.length, r.streamOffset]) } : {}),
    })),
  };
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(16);
  prefix.set(MAGIC, 0);
  prefix.writeUInt32BE(VERSION, 8);
  prefix.writeUInt32BE(json.byteLength, 12);
  return new Uint8Array(gzipSync(Buffer.concat([prefix, json, ...windows]), { level: 9 }));
}

function bad(message: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.INVALID_INDEX, `layer index: ${message}`);
}

const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const ENTRY_TYPES = new Set<EntryType>(['file', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'whiteout']);

/**
 * Output chunk size for gunzip: the gzip trailer's ISIZE (the decoded size mod 2^32), so that one
 * chunk holds the whole index and nothing is copied again to join chunks. Only a hint: a wrong or
 * missing trailer costs a join, and gunzip still checks the stream.
 */
function outputChunkSize(bytes: Uint8Array, maxDecoded: number): number {
  const fallback = 64 * 1024;
  if (bytes.byteLength < 18) return fallback;
  const n = bytes.byteLength;
  const isize = ((bytes[n - 1] as number) * 2 ** 24) + (((bytes[n - 2] as number) << 16) | ((bytes[n - 3] as number) << 8) | (bytes[n - 4] as number));
  // +1: a byte to spare, so the output never fills the chunk exactly
  return Math.min(Math.max(isize + 1, fallback), maxDecoded + 1, 256 << 20);
}

/** True for a normalised relative path: no leading or trailing `/`, no empty, `.` or `..` part. */
function isNormalPath(path: string): boolean {
  if (path === '') return true;
  let start = 0;
  for (;;) {
    const end = path.indexOf('/', start);
    const len = (end === -1 ? path.length : end) - start;
    if (len === 0) return false;
    if (path.charCodeAt(start) === 46 /* . */ && (len === 1 || (len === 2 && path.charCodeAt(start + 1) === 46))) return false;
    if (end === -1) return true;
    start = end + 1;
  }
}

/** Parses and validates a serialised zran/raw index. Malformed -> IMGSTREAM_INVALID_INDEX; too big -> IMGSTREAM_LIMIT_EXCEEDED. */
export function parseIndex(bytes: Uint8Array, options: ParseIndexOptions = {}): StreamLayerIndex {
  const maxBytes = options.maxIndexBytes ?? defaults.index.maxIndexBytes;
  const maxDecoded = options.maxDecodedIndexBytes ?? defaults.index.maxDecodedIndexBytes;
  const maxEntries = options.maxEntries ?? defaults.index.maxIndexEntries;
  const maxBlock = options.maxBlockBytes ?? defaults.index.maxBlockBytes;
  if (bytes.byteLength > maxBytes) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `layer index of ${bytes.byteLength} bytes exceeds ${maxBytes}`, { limit: maxBytes });
  let raw: Buffer;
  try {
    raw = gunzipSync(bytes, { maxOutputLength: maxDecoded, chunkSize: outputChunkSize(bytes, maxDecoded) });
  } catch (err) {
    if (err instanceof RangeError || (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `layer index decompresses to more than ${maxDecoded} bytes`, { limit: maxDecoded, cause: err });
    }
    throw new ImgstreamError(ErrorCode.INVALID_INDEX, 'layer index: not a valid gzip stream', { cause: err });
  }
  if (raw.byteLength < 16 || !raw.subarray(0, 8).equals(MAGIC)) throw bad('bad magic');
  const version = raw.readUInt32BE(8);
  if (version !== VERSION) throw bad(`unsupported version ${version}`);
  const jsonLen = raw.readUInt32BE(12);
  if (16 + jsonLen > raw.byteLength) throw bad('header runs past the end');
  let h: Record<string, unknown>;
  try {
    h = JSON.parse(raw.subarray(16, 16 + jsonLen).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new ImgstreamError(ErrorCode.INVALID_INDEX, 'layer index: header is not JSON', { cause: err });
  }
  if (typeof h !== 'object' || h === null) throw bad('header is not an object');
  const format = h.format;
  if (format !== 'zran' && format !== 'raw') throw bad(`unknown format ${JSON.stringify(format)}`);
  if (!isDigest(h.layerDigest)) throw bad('bad layerDigest');
  if (options.expectedLayerDigest !== undefined && h.layerDigest !== options.expectedLayerDigest) {
    throw new ImgstreamError(ErrorCode.DIGEST_MISMATCH, `layer index is for ${h.layerDigest}, not ${options.expectedLayerDigest}`, { expected: options.expectedLayerDigest, actual: h.layerDigest });
  }
  const { layerSize, uncompressedSize, spanBytes } = h;
  if (!isUint(layerSize) || !isUint(uncompressedSize) || !isUint(spanBytes)) throw bad('bad sizes');
  if (format === 'raw' && layerSize !== uncompressedSize) throw bad('raw layer size differs from its uncompressed size');
  if (!Array.isArray(h.blocks) || !Array.isArray(h.entries)) throw bad('blocks/entries missing');
  if (h.blocks.length > maxEntries || h.entries.length > maxEntries) {
    throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `layer index has more than ${maxEntries} blocks or entries`, { limit: maxEntries });
  }
  const windowStart = 16 + jsonLen;
  let winPos = windowStart;
  // the windows stay views of one buffer: the decoded index itself when the header is the smaller
  // part, else a copy of the window area (the header's bytes are not kept)
  const tail = raw.subarray(windowStart);
  const windowArea = jsonLen <= tail.byteLength ? new Uint8Array(tail.buffer, tail.byteOffset, tail.byteLength) : new Uint8Array(tail);
  const blocks: StreamBlock[] = [];
  let expectOut = 0;
  let prevFetch = -1;
  const rawBlocks = h.blocks as unknown[];
  for (let i = 0; i < rawBlocks.length; i++) {
    const b = rawBlocks[i];
    if (!Array.isArray(b) || b.length !== 8) throw bad(`block ${i} malformed`);
    const [fo, fs, uo, us, dg, bits, member, wl] = b as unknown[];
    if (!isUint(fo) || !isUint(fs) || !isUint(uo) || !isUint(us) || !isUint(bits) || !isUint(wl) || (member !== 0 && member !== 1)) throw bad(`block ${i} malformed`);
    const digest = `sha256:${String(dg)}`;
    if (!isDigest(digest)) throw bad(`block ${i} has a bad digest`);
    if (uo !== expectOut) throw bad(`checkpoints out of order or not contiguous at block ${i}`);
    if (fo <= prevFetch) throw bad(`checkpoints out of order at block ${i}`);
    if (fs === 0 || us === 0 || fo + fs > layerSize) throw bad(`block ${i} lies outside the layer blob`);
    if (bits > 7 || wl > WINDOW_BYTES) throw bad(`block ${i} has bad bits or window`);
    if (us > maxBlock) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `block ${i} decodes to ${us} bytes, more than ${maxBlock}`, { limit: maxBlock });
    if (format === 'raw' && (fo !== uo || fs !== us || bits !== 0 || wl !== 0 || member !== 0)) throw bad(`raw block ${i} malformed`);
    if (format === 'zran' && i === 0 && (fo !== 0 || member !== 1)) throw bad('first zran block must start at the first member');
    if (format === 'zran' && member === 1 && (bits !== 0 || wl !== 0)) throw bad(`member block ${i} with bits or window`);
    if (winPos + wl > raw.byteLength) throw bad('windows run past the end');
    const window = windowArea.subarray(winPos - windowStart, winPos - windowStart + wl);
    winPos += wl;
    blocks.push({ fetchOffset: fo, fetchSize: fs, uncompressedOffset: uo, uncompressedSize: us, digest, ...(format === 'zran' ? { bits, member: member === 1, window } : {}) });
    expectOut = uo + us;
    prevFetch = fo;
  }
  if (expectOut !== uncompressedSize) throw bad('blocks do not cover the uncompressed stream');
  // fetched ranges tile the blob: each starts where the previous ends (zran: one shared byte when
  // the next span starts mid-byte), the last ends at the end of the blob
  for (let i = 1; i < blocks.length; i++) {
    const prev = blocks[i - 1] as StreamBlock;
    const cur = blocks[i] as StreamBlock;
    if (cur.fetchOffset + ((cur.bits ?? 0) > 0 ? 1 : 0) !== prev.fetchOffset + prev.fetchSize) throw bad(`block ${i} does not start where block ${i - 1} ends`);
  }
  const lastBlock = blocks[blocks.length - 1];
  if (lastBlock !== undefined && lastBlock.fetchOffset + lastBlock.fetchSize !== layerSize) throw bad('the last block does not end at the end of the blob');
  if (winPos !== raw.byteLength) throw bad('trailing bytes after the windows');
  const entries: StreamEntry[] = [];
  const seen = new Set<string>();
  const rawEntries = h.entries as unknown[];
  for (let i = 0; i < rawEntries.length; i++) {
    const e = rawEntries[i] as Record<string, unknown>;
    if (typeof e !== 'object' || e === null || typeof e.p !== 'string' || !ENTRY_TYPES.has(e.t as EntryType)) throw bad(`entry ${i} malformed`);
    const path = e.p;
    if (!isNormalPath(path)) throw bad(`entry ${i} has a bad path`);
    if (seen.has(path)) throw bad(`duplicate path ${JSON.stringify(path)}`);
    seen.add(path);
    const type = e.t as EntryType;
    if (!isUint(e.m) || e.m > 0o7777 || !isUint(e.u) || !isUint(e.g) || typeof e.mt !== 'number' || !Number.isFinite(e.mt)) throw bad(`entry ${i} has bad metadata`);
    const size = e.s ?? 0;
    if (!isUint(size) || (type !== 'file' && size !== 0)) throw bad(`entry ${i} has a bad size`);
    const entry: { -readonly [K in keyof StreamEntry]: StreamEntry[K] } = { path, type, mode: e.m, uid: e.u, gid: e.g, mtimeMs: e.mt, size };
    if (e.l !== undefined) {
      if (typeof e.l !== 'string' || (type !== 'symlink' && type !== 'hardlink')) throw bad(`entry ${i} has a bad link`);
      entry.linkTarget = e.l;
    } else if (type === 'symlink' || type === 'hardlink') throw bad(`entry ${i} has no link target`);
    if (e.dv !== undefined) {
      const dv = e.dv as unknown[];
      if (!Array.isArray(dv) || dv.length !== 2 || !isUint(dv[0]) || !isUint(dv[1])) throw bad(`entry ${i} has bad device numbers`);
      entry.devMajor = dv[0];
      entry.devMinor = dv[1];
    }
    if (e.x !== undefined) {
      if (typeof e.x !== 'object' || e.x === null) throw bad(`entry ${i} has bad xattrs`);
      const x = new Map<string, Uint8Array>();
      for (const [k, val] of Object.entries(e.x as Record<string, unknown>)) {
        if (typeof val !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(val)) throw bad(`entry ${i} has a bad xattr`);
        x.set(k, new Uint8Array(Buffer.from(val, 'base64')));
      }
      entry.xattrs = x;
    }
    if (e.o !== undefined) {
      if (e.o !== 1 || type !== 'dir') throw bad(`entry ${i} has a bad opaque mark`);
      entry.opaque = true;
    }
    if (e.r !== undefined) {
      const r = e.r as unknown[];
      if (type !== 'file' || !Array.isArray(r) || r.length % 3 !== 0 || !r.every(isUint)) throw bad(`entry ${i} has bad regions`);
      const regions = [];
      let lastEnd = 0;
      for (let k = 0; k < r.length; k += 3) {
        const fileOffset = r[k] as number;
        const length = r[k + 1] as number;
        const streamOffset = r[k + 2] as number;
        if (fileOffset < lastEnd || fileOffset + length > size || streamOffset + length > uncompressedSize) throw bad(`entry ${i} has regions out of range`);
        lastEnd = fileOffset + length;
        regions.push({ fileOffset, length, streamOffset });
      }
      entry.regions = regions;
    } else if (type === 'file') entry.regions = [];
    entries.push(entry);
  }
  if (!seen.has('')) throw bad('no root entry');
  return new StreamLayerIndex({ format, layerDigest: h.layerDigest, layerSize, uncompressedSize, spanBytes, blocks, entries });
}
