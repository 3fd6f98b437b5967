/**
 * TEST-ONLY: a minimal ustar writer that records where each file's data lies, and a LayerIndex of
 * the "raw" (uncompressed) layout built from it. The real raw/zran/eStargz indexes come from
 * core's index formats; this exists so the block fetcher can be tested against a real HTTP server
 * before they land. Blocks are fixed-size slices of the blob, each verified by its sha256.
 */
import { createHash } from 'node:crypto';
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

function header(name: string, size: number, mode: number, type = '0'): Buffer {
  const h = Buffer.alloc(512);
  if (Buffer.byteLength(name) > 100) throw new Error(`test tar writer: name too long: ${name}`);
  h.write(name, 0, 'utf8');
  h.write(mode.toString(8).padStart(7, '0') + '\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(size.toString(8).padStart(11, '0') + '\0', 124);
  h.write((1_700_000_000).toString(8).padStart(11, '0') + '\0', 136);
  h.write('        ', 148);
  h.write(type, 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}

/** An uncompressed tar of regular files (plus their parent dirs) with known data offsets. */
export function buildTar(files: TarFileSpec[]): BuiltTar {
  const parts: Buffer[] = [];
  const offsets = new Map<string, number>();
  let pos = 0;
  const dirs = new Set<string>();
  for (const f of files) {
    const segs = f.path.split('/');
    for (let i = 1; i < segs.length; i++) {
      const d = segs.slice(0, i).join('/');
      if (dirs.has(d)) continue;
      dirs.add(d);
      parts.push(header(d + '/', 0, 0o755, '5'));
      pos += 512;
    }
    parts.push(header(f.path, f.content.byteLength, f.mode ?? 0o644));
    pos += 512;
    offsets.set(f.path, pos);
    parts.push(Buffer.from(f.content));
    const pad = (512 - (f.content.byteLength % 512)) % 512;
    parts.push(Buffer.alloc(pad));
    pos += f.content.byteLength + pad;
  }
  parts.push(Buffer.alloc(1024));
  return { tar: Buffer.concat(parts), offsets, files };
}

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
export function pseudoRandomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
