import type { RangeReader } from '../blob.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { LayerIndex } from './model.js';

/**
 * Reads `[offset, offset+length)` of a regular file through a layer index: fetches each needed
 * block's compressed range from `blob`, decodes and verifies it, and fills holes with zeros.
 * No caching: the block fetcher does that; this is the simple path (tests, `imgstream cat`).
 * `onFetch` sees every range fetched (for statistics).
 */
export async function readEntryRange(
  index: LayerIndex,
  blob: RangeReader,
  path: string,
  offset: number,
  length: number,
  options: { signal?: AbortSignal; onFetch?: (offset: number, length: number) => void } = {},
): Promise<Uint8Array> {
  const entry = index.entries.get(path);
  if (entry === undefined || entry.type !== 'file') throw new ImgstreamError(ErrorCode.NOT_FOUND, `${JSON.stringify(path)} is not a regular file of the layer`, { path });
  const start = Math.min(offset, entry.size);
  const end = Math.min(entry.size, offset + length);
  const out = new Uint8Array(Math.max(0, end - start));
  const decoded = new Map<number, Uint8Array>();
  for (const ext of entry.extents ?? []) {
    const s = Math.max(start, ext.fileOffset);
    const e = Math.min(end, ext.fileOffset + ext.length);
    if (s >= e) continue;
    let block = decoded.get(ext.block);
    if (block === undefined) {
      const info = index.blocks[ext.block];
      if (info === undefined) throw new ImgstreamError(ErrorCode.INVALID_INDEX, `extent of ${path} points to a missing block`, { path });
      options.onFetch?.(info.compressedOffset, info.compressedSize);
      const bytes = await blob.readRange(info.compressedOffset, info.compressedSize, options.signal !== undefined ? { signal: options.signal } : {});
      block = await index.decodeBlock(ext.block, bytes);
      decoded.set(ext.block, block);
    }
    const from = ext.blockOffset + (s - ext.fileOffset);
    out.set(block.subarray(from, from + (e - s)), s - start);
  }
  return out;
}
