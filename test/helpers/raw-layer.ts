/**
 * BENCH-ONLY (bench/src/engine.ts is its last user; tests use core's buildRawIndex): a LayerIndex of
 * the "raw" layout built synchronously from a tar of regular files, blocks being fixed-size slices
 * of the blob, each verified by its sha256. Switch the bench to buildRawIndex and delete this file.
 */
import { createHash } from 'node:crypto';
import { buildTar as buildTarEntries, pseudoRandom, type TarEntrySpec } from './tar-builder.ts';
import { ErrorCode, ImgstreamError, sha256Digest, type BlockInfo, type Extent, type FileEntry, type LayerIndex } from '@imgstream/core';

export interface TarFileSpec {
  path: string;
  content: Uint8Array;
  mode?: number;
}

export interface BuiltTar {
  tar: Buffer;
  /** path -> offset of the content in the tar */
  offsets: Map<string, number>;
  files: TarFileSpec[];
}

/** An uncompressed tar of regular files (each parent dir before its first file), with known data offsets. */
export function buildTar(files: TarFileSpec[]): BuiltTar {
  const entries: TarEntrySpec[] = [];
  const dirs = new Set<string>();
  for (const f of files) {
    const segs = f.path.split('/');
    for (let i = 1; i < segs.length; i++) {
      const d = segs.slice(0, i).join('/');
      if (!dirs.has(d)) entries.push({ type: 'dir', name: `${d}/`, mtime: 1_700_000_000 });
      dirs.add(d);
    }
    entries.push({ type: 'file', name: f.path, content: f.content, mode: f.mode ?? 0o644, mtime: 1_700_000_000 });
  }
  const tar = Buffer.from(buildTarEntries(entries));
  // every entry here is one 512-byte header followed by its padded data
  const offsets = new Map<string, number>();
  let pos = 0;
  for (const e of entries) {
    pos += 512;
    if (e.type === 'file') {
      offsets.set(e.name, pos);
      pos += Math.ceil(bytesOf(e.content).byteLength / 512) * 512;
    }
  }
  return { tar, offsets, files };
}

const bytesOf = (c: Uint8Array | string | undefined): Uint8Array => (typeof c === 'string' ? new TextEncoder().encode(c) : c ?? new Uint8Array(0));

/** A LayerIndex over `built.tar` cut into `blockSize` blocks. */
export function rawTestIndex(built: BuiltTar, blockSize: number, onDecode?: (block: number) => void): LayerIndex {
  const { tar } = built;
  const blocks: BlockInfo[] = [];
  const blockDigests: string[] = [];
  for (let off = 0; off < tar.byteLength; off += blockSize) {
    const size = Math.min(blockSize, tar.byteLength - off);
    blocks.push({ compressedOffset: off, compressedSize: size, uncompressedSize: size });
    blockDigests.push(createHash('sha256').update(tar.subarray(off, off + size)).digest('hex'));
  }
  const entries = new Map<string, FileEntry>();
  const children = new Map<string, string[]>();
  const addDir = (path: string): void => {
    if (entries.has(path)) return;
    entries.set(path, { path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeMs: 1_700_000_000_000, size: 0 });
    children.set(path, []);
    if (path !== '') {
      const parent = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
      addDir(parent);
      children.get(parent)!.push(path.slice(path.lastIndexOf('/') + 1));
    }
  };
  addDir('');
  for (const f of built.files) {
    const parent = f.path.includes('/') ? f.path.slice(0, f.path.lastIndexOf('/')) : '';
    addDir(parent);
    children.get(parent)!.push(f.path.slice(f.path.lastIndexOf('/') + 1));
    const start = built.offsets.get(f.path)!;
    const extents: Extent[] = [];
    let fileOffset = 0;
    while (fileOffset < f.content.byteLength) {
      const abs = start + fileOffset;
      const block = Math.floor(abs / blockSize);
      const blockOffset = abs - block * blockSize;
      const length = Math.min(blockSize - blockOffset, f.content.byteLength - fileOffset);
      extents.push({ fileOffset, length, block, blockOffset });
      fileOffset += length;
    }
    entries.set(f.path, { path: f.path, type: 'file', mode: f.mode ?? 0o644, uid: 0, gid: 0, mtimeMs: 1_700_000_000_000, size: f.content.byteLength, extents });
  }
  for (const c of children.values()) c.sort();
  return {
    format: 'raw',
    layerDigest: sha256Digest(tar),
    layerSize: tar.byteLength,
    blocks,
    entries,
    children: (dir) => children.get(dir),
    async decodeBlock(block, compressed) {
      onDecode?.(block);
      const want = blockDigests[block];
      const got = createHash('sha256').update(compressed).digest('hex');
      if (want !== got) throw new ImgstreamError(ErrorCode.DIGEST_MISMATCH, `test raw block ${block} does not match`, { expected: want, actual: got });
      return compressed;
    },
  };
}

/** Deterministic pseudo-random bytes. */
export const pseudoRandomBytes = (length: number, seed: number): Uint8Array => pseudoRandom(length, seed);
