import { gunzipSync } from 'node:zlib';
import type { RangeReader } from '../blob.js';
import { defaults } from '../defaults.js';
import { digestMismatch, isDigest, sha256Digest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import { readTar } from '../tar/tar-reader.js';
import { FileTableBuilder, type EntryInput } from './file-table.js';
import { inflateSpanNative } from './native-span-inflate.js';
import type { BlockInfo, EntryType, Extent } from './model.js';
import { TableLayerIndex } from './table-layer-index.js';

/** Manifest layer annotation carrying the digest of an eStargz layer's TOC JSON. */
export const ESTARGZ_TOC_DIGEST_ANNOTATION = 'containerd.io/snapshot/stargz/toc.digest';
/** Size of the current eStargz footer. */
export const ESTARGZ_FOOTER_BYTES = 51;
/** Size of the legacy stargz footer. */
export const LEGACY_STARGZ_FOOTER_BYTES = 47;
const TOC_NAME = 'stargz.index.json';
/** Bytes read from the end of the blob first: the footer plus, for most layers, the whole TOC. */
const TAIL_READ_BYTES = 64 << 10;
const HIDDEN = new Set(['.prefetch.landmark', '.no.prefetch.landmark', TOC_NAME]);

/** Options of {@link openEstargzIndex}. */
export interface OpenEstargzIndexOptions {
  /** Digest of the layer blob (recorded in the index; the blob is not hashed here). */
  layerDigest: Digest;
  /** The `containerd.io/snapshot/stargz/toc.digest` annotation; when given the TOC must match it. */
  tocDigest?: Digest;
  /** Largest compressed TOC in bytes. Default `defaults.index.maxIndexBytes`. */
  maxTocBytes?: number;
  /** Largest TOC JSON in bytes. Default `defaults.index.maxDecodedIndexBytes`. */
  maxTocJsonBytes?: number;
  /** Largest number of TOC entries. Default `defaults.index.maxIndexEntries`. */
  maxEntries?: number;
  /** Largest uncompressed size of one block (gzip member), in bytes. Default `defaults.index.maxBlockBytes` (64 MiB). */
  maxBlockBytes?: number;
  signal?: AbortSignal;
}

function bad(message: string, fields: Record<string, unknown> = {}): ImgstreamError {
  return new ImgstreamError(ErrorCode.INVALID_INDEX, `eStargz: ${message}`, fields);
}

/** Parses an eStargz (51-byte) or legacy stargz (47-byte) footer; returns the TOC offset. */
export function parseEstargzFooter(tail: Uint8Array): { tocOffset: number; footerBytes: number } {
  const tryParse = (footer: Uint8Array, legacy: boolean): number | undefined => {
    if (footer.byteLength !== (legacy ? LEGACY_STARGZ_FOOTER_BYTES : ESTARGZ_FOOTER_BYTES)) return undefined;
    if (footer[0] !== 0x1f || footer[1] !== 0x8b || footer[2] !== 8 || footer[3] !== 4) return undefined;
    const xlen = (footer[10] ?? 0) | ((footer[11] ?? 0) << 8);
    let payload: Uint8Array;
    if (legacy) {
      if (xlen !== 22) return undefined;
      payload = footer.subarray(12, 34);
    } else {
      if (xlen !== 26 || footer[12] !== 0x53 || footer[13] !== 0x47 || footer[14] !== 22 || footer[15] !== 0) return undefined;
      payload = footer.subarray(16, 38);
    }
    const text = new TextDecoder().decode(payload);
    if (!/^[0-9a-f]{16}STARGZ$/.test(text)) return undefined;
    try {
      if (gunzipSync(footer, { maxOutputLength: 1 }).byteLength !== 0) return undefined;
    } catch {
      return undefined;
    }
    const off = Number.parseInt(text.slice(0, 16), 16);
    return Number.isSafeInteger(off) ? off : undefined;
  };
  if (tail.byteLength >= ESTARGZ_FOOTER_BYTES) {
    const off = tryParse(tail.subarray(tail.byteLength - ESTARGZ_FOOTER_BYTES), false);
    if (off !== undefined) return { tocOffset: off, footerBytes: ESTARGZ_FOOTER_BYTES };
  }
  if (tail.byteLength >= LEGACY_STARGZ_FOOTER_BYTES) {
    const off = tryParse(tail.subarray(tail.byteLength - LEGACY_STARGZ_FOOTER_BYTES), true);
    if (off !== undefined) return { tocOffset: off, footerBytes: LEGACY_STARGZ_FOOTER_BYTES };
  }
  throw bad('no valid eStargz footer at the end of the blob');
}

interface TocChunk {
  fileOffset: number;
  length: number;
  offset: number;
  innerOffset: number;
  digest: Digest;
}

const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const optUint = (v: unknown, what: string, name: string): number => {
  if (v === undefined) return 0;
  if (!isUint(v)) throw bad(`bad ${what} for ${JSON.stringify(name)}`, { path: name });
  return v;
};

const TYPES: Record<string, Exclude<EntryType, 'whiteout'>> = {
  reg: 'file',
  dir: 'dir',
  symlink: 'symlink',
  hardlink: 'hardlink',
  char: 'char',
  block: 'block',
  fifo: 'fifo',
};

/**
 * Opens an eStargz layer: reads the footer and the TOC through `reader`, validates them, and
 * returns its LayerIndex (one block per gzip member holding file chunks; chunk digests checked
 * in `decodeBlock`).
 */
export async function openEstargzIndex(reader: RangeReader, options: OpenEstargzIndexOptions): Promise<TableLayerIndex> {
  const maxToc = options.maxTocBytes ?? defaults.index.maxIndexBytes;
  const maxJson = options.maxTocJsonBytes ?? defaults.index.maxDecodedIndexBytes;
  const maxEntries = options.maxEntries ?? defaults.index.maxIndexEntries;
  const maxBlock = options.maxBlockBytes ?? defaults.index.maxBlockBytes;
  const size = reader.size;
  if (size < LEGACY_STARGZ_FOOTER_BYTES) throw bad(`blob of ${size} bytes is too small for a footer`);
  // One read usually gets the footer and the whole TOC of a small layer; a bigger TOC takes a second.
  const tailLen = Math.min(size, TAIL_READ_BYTES);
  const tail = await reader.readRange(size - tailLen, tailLen, { signal: options.signal });
  if (tail.byteLength !== tailLen) throw new ImgstreamError(ErrorCode.CORRUPT_DATA, 'eStargz: short read of the footer');
  const { tocOffset, footerBytes } = parseEstargzFooter(tail);
  const tocEnd = size - footerBytes;
  if (tocOffset >= tocEnd) throw bad(`TOC offset ${tocOffset} lies outside the blob (TOC must end at ${tocEnd})`, { offset: tocOffset });
  const tocSize = tocEnd - tocOffset;
  if (tocSize > maxToc) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `eStargz TOC of ${tocSize} bytes exceeds ${maxToc}`, { limit: maxToc });
  const tailStart = size - tailLen;
  const tocGz = tocOffset >= tailStart ? tail.subarray(tocOffset - tailStart, tocEnd - tailStart) : await reader.readRange(tocOffset, tocSize, { signal: options.signal });
  if (tocGz.byteLength !== tocSize) throw new ImgstreamError(ErrorCode.CORRUPT_DATA, 'eStargz: short read of the TOC');
  let tocTar: Uint8Array;
  try {
    tocTar = gunzipSync(tocGz, { maxOutputLength: maxJson + 4096 });
  } catch (err) {
    if (err instanceof RangeError || (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `eStargz TOC decompresses to more than ${maxJson} bytes`, { limit: maxJson, cause: err });
    }
    throw new ImgstreamError(ErrorCode.CORRUPT_DATA, 'eStargz: TOC is not a valid gzip member', { cause: err });
  }
  let json: Uint8Array | undefined;
  for await (const e of readTar([tocTar])) {
    if (e.name.replace(/^\.?\//, '') !== TOC_NAME || e.type !== 'file') throw bad(`unexpected entry ${JSON.stringify(e.name)} in the TOC archive`);
    if (json !== undefined) throw bad('two TOCs');
    const parts: Uint8Array[] = [];
    for await (const c of e.body) parts.push(c);
    json = Buffer.concat(parts);
  }
  if (json === undefined) throw bad('TOC archive has no stargz.index.json');
  if (json.byteLength > maxJson) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `eStargz TOC JSON of ${json.byteLength} bytes exceeds ${maxJson}`, { limit: maxJson });
  if (options.tocDigest !== undefined) {
    const actual = sha256Digest(json);
    if (actual !== options.tocDigest) throw digestMismatch(options.tocDigest, actual, 'eStargz TOC');
  }
  let toc: { version?: unknown; entries?: unknown };
  try {
    toc = JSON.parse(Buffer.from(json).toString('utf8')) as typeof toc;
  } catch (err) {
    throw new ImgstreamError(ErrorCode.INVALID_INDEX, 'eStargz: TOC is not JSON', { cause: err });
  }
  if (typeof toc !== 'object' || toc === null || toc.version !== 1 || !Array.isArray(toc.entries)) throw bad('TOC is not version 1 with entries');
  if (toc.entries.length > maxEntries) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `eStargz TOC has more than ${maxEntries} entries`, { limit: maxEntries });

  // Pass 1: files and their chunks.
  interface Pending {
    input: Omit<EntryInput, 'extents'>;
    chunks: TocChunk[];
  }
  const pending: Pending[] = [];
  let lastFile: Pending | undefined;
  for (const raw of toc.entries as unknown[]) {
    const e = raw as Record<string, unknown>;
    if (typeof e !== 'object' || e === null || typeof e.name !== 'string' || typeof e.type !== 'string') throw bad('malformed TOC entry');
    const name = e.name;
    if (e.type === 'chunk') {
      if (lastFile === undefined || lastFile.input.name !== name) throw bad(`chunk of ${JSON.stringify(name)} does not follow its file`, { path: name });
      lastFile.chunks.push(parseChunk(e, name, lastFile.input.size));
      continue;
    }
    const type = TYPES[e.type];
    if (type === undefined) throw bad(`unknown entry type ${JSON.stringify(e.type)}`, { path: name });
    let mtimeMs = 0;
    if (e.modtime !== undefined) {
      if (typeof e.modtime !== 'string' || Number.isNaN(Date.parse(e.modtime))) throw bad(`bad modtime for ${JSON.stringify(name)}`, { path: name });
      mtimeMs = Date.parse(e.modtime);
    }
    const xattrs = new Map<string, Uint8Array>();
    if (e.xattrs !== undefined) {
      if (typeof e.xattrs !== 'object' || e.xattrs === null) throw bad(`bad xattrs for ${JSON.stringify(name)}`);
      for (const [k, v] of Object.entries(e.xattrs as Record<string, unknown>)) {
        if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw bad(`bad xattr ${k} for ${JSON.stringify(name)}`);
        xattrs.set(k, new Uint8Array(Buffer.from(v, 'base64')));
      }
    }
    const sizeV = optUint(e.size, 'size', name);
    const input: Omit<EntryInput, 'extents'> = {
      name,
      type,
      mode: optUint(e.mode, 'mode', name) & 0o7777,
      uid: optUint(e.uid, 'uid', name),
      gid: optUint(e.gid, 'gid', name),
      mtimeMs,
      size: type === 'file' ? sizeV : 0,
      ...(typeof e.linkName === 'string' ? { linkName: e.linkName } : {}),
      devMajor: optUint(e.devMajor, 'devMajor', name),
      devMinor: optUint(e.devMinor, 'devMinor', name),
      xattrs,
    };
    const p: Pending = { input, chunks: [] };
    if (type === 'file' && sizeV > 0) p.chunks.push(parseChunk(e, name, sizeV));
    lastFile = type === 'file' ? p : undefined;
    pending.push(p);
  }

  // Pass 2: blocks = distinct chunk offsets.
  const offsets = new Set<number>();
  for (const p of pending) {
    let next = 0;
    for (const c of p.chunks) {
      if (c.fileOffset !== next) throw bad(`chunks of ${JSON.stringify(p.input.name)} are not contiguous`, { path: p.input.name });
      if (c.offset >= tocOffset) throw bad(`chunk of ${JSON.stringify(p.input.name)} points outside the blob data`, { path: p.input.name, offset: c.offset });
      next += c.length;
      offsets.add(c.offset);
    }
    if (p.input.type === 'file' && next !== p.input.size) throw bad(`chunks of ${JSON.stringify(p.input.name)} cover ${next} of ${p.input.size} bytes`, { path: p.input.name });
  }
  const sorted = [...offsets].sort((a, b) => a - b);
  const blockOf = new Map<number, number>(sorted.map((o, i) => [o, i]));
  const blockChunks: Array<Array<{ inner: number; length: number; digest: Digest }>> = sorted.map(() => []);
  const blockSize: number[] = sorted.map(() => 0);
  for (const p of pending) {
    for (const c of p.chunks) {
      const b = blockOf.get(c.offset) as number;
      blockChunks[b]?.push({ inner: c.innerOffset, length: c.length, digest: c.digest });
      blockSize[b] = Math.max(blockSize[b] ?? 0, c.innerOffset + c.length);
    }
  }
  // the prioritized files come before the landmark in the blob: every block before its chunk
  const landmark = pending.find((p) => p.input.name.replace(/^\.?\//, '') === '.prefetch.landmark');
  const landmarkOffset = landmark?.chunks[0]?.offset;
  const prioritizedBlocks = landmarkOffset !== undefined ? blockOf.get(landmarkOffset) : undefined;
  const table = new FileTableBuilder();
  for (const p of pending) {
    // prefetch landmarks and the TOC are eStargz bookkeeping, not layer content
    if (HIDDEN.has(p.input.name.replace(/^\.?\//, ''))) continue;
    const extents: Extent[] = p.chunks.map((c) => ({ fileOffset: c.fileOffset, length: c.length, block: blockOf.get(c.offset) as number, blockOffset: c.innerOffset }));
    table.add(p.input.type === 'file' ? { ...p.input, extents } : p.input);
  }
  const blocks: BlockInfo[] = sorted.map((o, i) => {
    const end = sorted[i + 1] ?? tocOffset;
    const us = blockSize[i] ?? 0;
    if (us > maxBlock) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `eStargz block at ${o} decodes to ${us} bytes, more than ${maxBlock}`, { limit: maxBlock });
    return { compressedOffset: o, compressedSize: end - o, uncompressedSize: us };
  });
  return new TableLayerIndex({
    format: 'estargz',
    layerDigest: options.layerDigest,
    layerSize: size,
    blocks,
    entries: table.entries,
    children: table.childrenMap(),
    ...(prioritizedBlocks !== undefined ? { prioritizedBlocks } : {}),
    decode: async (i, bytes) => {
      const info = blocks[i] as BlockInfo;
      const out = await inflateSpanNative(bytes, { bits: 0, member: true, window: new Uint8Array(0), uncompressedSize: info.uncompressedSize, fetchOffset: info.compressedOffset });
      for (const c of blockChunks[i] ?? []) {
        const actual = sha256Digest(out.subarray(c.inner, c.inner + c.length));
        if (actual !== c.digest) throw digestMismatch(c.digest, actual, `eStargz chunk at ${info.compressedOffset}+${c.inner} of ${options.layerDigest}`);
      }
      return out;
    },
  });
}

function parseChunk(e: Record<string, unknown>, name: string, fileSize: number): TocChunk {
  const offset = optUint(e.offset, 'offset', name);
  const fileOffset = optUint(e.chunkOffset, 'chunkOffset', name);
  let length = optUint(e.chunkSize, 'chunkSize', name);
  if (length === 0) length = fileSize - fileOffset;
  if (length <= 0 || fileOffset + length > fileSize) throw bad(`chunk of ${JSON.stringify(name)} lies outside the file`, { path: name });
  const innerOffset = optUint(e.innerOffset, 'innerOffset', name);
  if (!isDigest(e.chunkDigest)) throw bad(`chunk of ${JSON.stringify(name)} has no valid chunkDigest (unverifiable)`, { path: name });
  return { fileOffset, length, offset, innerOffset, digest: e.chunkDigest };
}
