import { sha256Digest, digestMismatch, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import { inflateSpanNative } from './native-span-inflate.js';
import { regionsToExtents, type StreamRegion } from './file-table.js';
import type { BlockInfo, FileEntry } from './model.js';
import { TableLayerIndex } from './table-layer-index.js';

/** One block of a zran or raw index: a span of the uncompressed stream and where it is compressed. */
export interface StreamBlock {
  /** First compressed byte to fetch. */
  readonly fetchOffset: number;
  readonly fetchSize: number;
  readonly uncompressedOffset: number;
  readonly uncompressedSize: number;
  /** sha256 of the fetched bytes. */
  readonly digest: Digest;
  /** zran only: bits of the first fetched byte that belong to the span (0 = start at a whole byte). */
  readonly bits?: number;
  /** zran only: the span starts at a gzip member header. */
  readonly member?: boolean;
  /** zran only: the 32 KiB (or less) of uncompressed data before the span. */
  readonly window?: Uint8Array;
}

/** A file-table entry as stored in a zran/raw index: content as regions of the uncompressed stream. */
export type StreamEntry = Omit<FileEntry, 'extents'> & { readonly regions?: readonly StreamRegion[] };

/** Everything a zran or raw index holds; what is serialised. */
export interface StreamIndexData {
  readonly format: 'zran' | 'raw';
  readonly layerDigest: Digest;
  readonly layerSize: number;
  readonly uncompressedSize: number;
  /** zran: the span size the index was built with; raw: the block size. */
  readonly spanBytes: number;
  readonly blocks: readonly StreamBlock[];
  readonly entries: readonly StreamEntry[];
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i === -1 ? '' : path.slice(0, i);
}

/** The entry of a regular file with its content as extents (explicit fields: cheaper than a spread). */
function fileEntry(e: StreamEntry, extents: FileEntry['extents']): FileEntry {
  const out: { -readonly [K in keyof FileEntry]: FileEntry[K] } = { path: e.path, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtimeMs: e.mtimeMs, size: e.size, extents };
  if (e.linkTarget !== undefined) out.linkTarget = e.linkTarget;
  if (e.devMajor !== undefined) out.devMajor = e.devMajor;
  if (e.devMinor !== undefined) out.devMinor = e.devMinor;
  if (e.xattrs !== undefined) out.xattrs = e.xattrs;
  if (e.opaque !== undefined) out.opaque = e.opaque;
  return out;
}

/** Other entries are used as they are, unless they carry (empty) regions. */
function withoutRegions(e: StreamEntry): FileEntry {
  if (e.regions === undefined) return e;
  const { regions: _regions, ...rest } = e;
  return rest;
}

/** A LayerIndex for plain gzip (zran) and uncompressed (raw) layers; can serialise itself. */
export class StreamLayerIndex extends TableLayerIndex {
  readonly data: StreamIndexData;

  constructor(data: StreamIndexData) {
    const starts = data.blocks.map((b) => b.uncompressedOffset);
    const sizes = data.blocks.map((b) => b.uncompressedSize);
    const entries = new Map<string, FileEntry>();
    const children = new Map<string, string[]>();
    for (const e of data.entries) {
      entries.set(e.path, e.type === 'file' ? fileEntry(e, regionsToExtents(e.regions ?? [], starts, sizes, e.path)) : withoutRegions(e));
      if (e.type === 'dir') children.set(e.path, children.get(e.path) ?? []);
    }
    for (const e of data.entries) {
      if (e.path === '') continue;
      const parent = parentOf(e.path);
      const list = children.get(parent);
      if (list === undefined || entries.get(parent)?.type !== 'dir') {
        throw new ImgstreamError(ErrorCode.INVALID_INDEX, `parent of ${JSON.stringify(e.path)} is not a directory in the index`, { path: e.path });
      }
      list.push(e.path.slice(parent === '' ? 0 : parent.length + 1));
    }
    for (const list of children.values()) list.sort();
    const blocks: BlockInfo[] = data.blocks.map((b) => ({ compressedOffset: b.fetchOffset, compressedSize: b.fetchSize, uncompressedSize: b.uncompressedSize }));
    super({
      format: data.format,
      layerDigest: data.layerDigest,
      layerSize: data.layerSize,
      blocks,
      entries,
      children,
      decode: (i, bytes) => {
        const b = data.blocks[i] as StreamBlock;
        const actual = sha256Digest(bytes);
        if (actual !== b.digest) throw digestMismatch(b.digest, actual, `block ${i} of layer ${data.layerDigest}`);
        if (data.format === 'raw') return bytes;
        return inflateSpanNative(bytes, {
          bits: b.bits ?? 0,
          member: b.member ?? false,
          window: b.window ?? new Uint8Array(0),
          uncompressedSize: b.uncompressedSize,
          fetchOffset: b.fetchOffset,
        });
      },
    });
    this.data = data;
  }
}
