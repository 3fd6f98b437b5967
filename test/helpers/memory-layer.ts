/**
 * TEST-ONLY stand-ins, to be replaced by core's real index formats and block fetcher at
 * integration: a tiny tar writer, a tar → LayerIndex reader ('raw' format, blocks = 64 KiB slices
 * of the tar) and an in-memory LayerContent with fault hooks. They exist so the FUSE tests can
 * run before core's formats land; nothing outside test/ may import them.
 */
import { createHash } from 'node:crypto';
import type { BlockInfo, Digest, EntryType, Extent, FileEntry, LayerIndex } from '@imgstream/core';
import type { LayerContent } from '@imgstream/fuse';

// ---- tar writer --------------------------------------------------------------------------

/** One tar member, as a test describes it (paths and names exactly as they go into the tar). */
export interface TarMember {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';
  /** Permission bits incl. setuid/setgid/sticky. Default 0o644 (files), 0o755 (dirs), 0o777 (symlinks). */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch. Default 1_700_000_000. */
  mtime?: number;
  content?: Uint8Array | string;
  linkTarget?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, Uint8Array | string>;
}

const TYPEFLAG: Record<TarMember['type'], string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function header(fields: { name: string; mode: number; uid: number; gid: number; size: number; mtime: number; type: string; link: string; major: number; minor: number }): Buffer {
  const h = Buffer.alloc(512);
  h.write(fields.name.slice(0, 100), 0, 'utf8');
  h.write(octal(fields.mode, 8), 100);
  h.write(octal(fields.uid, 8), 108);
  h.write(octal(fields.gid, 8), 116);
  h.write(octal(fields.size, 12), 124);
  h.write(octal(fields.mtime, 12), 136);
  h.write('        ', 148);
  h.write(fields.type, 156);
  h.write(fields.link.slice(0, 100), 157, 'utf8');
  h.write('ustar\0', 257);
  h.write('00', 263);
  h.write(octal(fields.major, 8), 329);
  h.write(octal(fields.minor, 8), 337);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148);
  return h;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function pad(b: Buffer): Buffer {
  const rem = b.length % 512;
  return rem === 0 ? b : Buffer.concat([b, Buffer.alloc(512 - rem)]);
}

/** A tar archive of `members`, in order (PAX headers for long names and xattrs). */
export function writeTar(members: readonly TarMember[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const content = m.type === 'file' ? Buffer.from(m.content ?? '') : Buffer.alloc(0);
    const link = m.linkTarget ?? '';
    const name = m.type === 'dir' && !m.path.endsWith('/') ? `${m.path}/` : m.path;
    const pax: Buffer[] = [];
    if (Buffer.byteLength(name) > 100) pax.push(paxRecord('path', Buffer.from(name)));
    if (Buffer.byteLength(link) > 100) pax.push(paxRecord('linkpath', Buffer.from(link)));
    for (const [k, v] of Object.entries(m.xattrs ?? {})) pax.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.from(v)));
    const mtime = m.mtime ?? 1_700_000_000;
    if (pax.length > 0) {
      const body = Buffer.concat(pax);
      parts.push(header({ name: 'PaxHeader', mode: 0o644, uid: 0, gid: 0, size: body.length, mtime, type: 'x', link: '', major: 0, minor: 0 }), pad(body));
    }
    const defMode = m.type === 'dir' ? 0o755 : m.type === 'symlink' ? 0o777 : 0o644;
    parts.push(
      header({ name, mode: m.mode ?? defMode, uid: m.uid ?? 0, gid: m.gid ?? 0, size: content.length, mtime, type: TYPEFLAG[m.type], link, major: m.devMajor ?? 0, minor: m.devMinor ?? 0 }),
    );
    if (content.length > 0) parts.push(pad(content));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ---- tar → LayerIndex ----------------------------------------------------------------------

const BLOCK_BYTES = 64 * 1024;

function normalise(p: string): string {
  const parts = p.split('/').filter((x) => x !== '' && x !== '.');
  return parts.join('/');
}

function parseOctal(b: Buffer, off: number, len: number): number {
  const s = b.toString('latin1', off, off + len).replace(/\0.*$/s, '').trim();
  return s === '' ? 0 : parseInt(s, 8);
}

function parsePax(body: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < body.length) {
    const sp = body.indexOf(0x20, i);
    const len = Number(body.toString('latin1', i, sp));
    const rec = body.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    out.set(rec.toString('utf8', 0, eq), Buffer.from(rec.subarray(eq + 1)));
    i += len;
  }
  return out;
}

interface MutableEntry {
  path: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  size: number;
  linkTarget?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Map<string, Uint8Array>;
  opaque?: boolean;
  extents?: Extent[];
}

/** A LayerIndex read from an uncompressed tar (TEST-ONLY; core's 'raw' format replaces it). */
export function indexTar(tar: Buffer): LayerIndex {
  const entries = new Map<string, MutableEntry>();
  const ensureDir = (path: string): void => {
    if (entries.has(path)) return;
    if (path !== '') ensureDir(parentOf(path));
    entries.set(path, { path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeMs: 0, size: 0 });
  };
  let off = 0;
  let pax: Map<string, Buffer> | undefined;
  while (off + 512 <= tar.length) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const size = parseOctal(h, 124, 12);
    const type = String.fromCharCode(h[156] ?? 48);
    const dataOff = off + 512;
    off = dataOff + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      pax = parsePax(tar.subarray(dataOff, dataOff + size));
      continue;
    }
    if (type === 'g') continue;
    const prefix = h.toString('utf8', 345, 500).replace(/\0.*$/s, '');
    let name = h.toString('utf8', 0, 100).replace(/\0.*$/s, '');
    if (prefix !== '') name = `${prefix}/${name}`;
    let link = h.toString('utf8', 157, 257).replace(/\0.*$/s, '');
    const xattrs = new Map<string, Uint8Array>();
    if (pax !== undefined) {
      if (pax.has('path')) name = pax.get('path')!.toString('utf8');
      if (pax.has('linkpath')) link = pax.get('linkpath')!.toString('utf8');
      for (const [k, v] of pax) if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice('SCHILY.xattr.'.length), v);
      pax = undefined;
    }
    const path = normalise(name);
    const base = path.slice(path.lastIndexOf('/') + 1);
    const parent = parentOf(path);
    ensureDir(parent);
    if (base === '.wh..wh..opq') {
      (entries.get(parent) as MutableEntry).opaque = true;
      continue;
    }
    const common = { mode: parseOctal(h, 100, 8) & 0o7777, uid: parseOctal(h, 108, 8), gid: parseOctal(h, 116, 8), mtimeMs: parseOctal(h, 136, 12) * 1000 };
    if (base.startsWith('.wh.')) {
      const hidden = (parent === '' ? '' : `${parent}/`) + base.slice(4);
      entries.set(hidden, { path: hidden, type: 'whiteout', ...common, mode: 0, size: 0 });
      continue;
    }
    const e: MutableEntry = { path, type: 'file', ...common, size: 0 };
    if (xattrs.size > 0) e.xattrs = xattrs;
    switch (type) {
      case '0':
      case '\0':
      case '7': {
        e.size = size;
        e.extents = [];
        for (let fo = 0; fo < size; ) {
          const abs = dataOff + fo;
          const block = Math.floor(abs / BLOCK_BYTES);
          const blockOffset = abs % BLOCK_BYTES;
          const length = Math.min(size - fo, BLOCK_BYTES - blockOffset);
          e.extents.push({ fileOffset: fo, length, block, blockOffset });
          fo += length;
        }
        break;
      }
      case '1':
        e.type = 'hardlink';
        e.linkTarget = normalise(link);
        break;
      case '2':
        e.type = 'symlink';
        e.linkTarget = link;
        break;
      case '3':
      case '4':
        e.type = type === '3' ? 'char' : 'block';
        e.devMajor = parseOctal(h, 329, 8);
        e.devMinor = parseOctal(h, 337, 8);
        break;
      case '5': {
        e.type = 'dir';
        const prev = entries.get(path);
        if (prev?.opaque) e.opaque = true;
        break;
      }
      case '6':
        e.type = 'fifo';
        break;
      default:
        throw new Error(`test tar reader: unsupported type ${JSON.stringify(type)}`);
    }
    entries.set(path, e);
  }
  const kids = new Map<string, string[]>();
  for (const p of entries.keys()) {
    if (p === '') continue;
    const parent = parentOf(p);
    let list = kids.get(parent);
    if (list === undefined) kids.set(parent, (list = []));
    list.push(p.slice(p.lastIndexOf('/') + 1));
  }
  for (const list of kids.values()) list.sort();
  const blocks: BlockInfo[] = [];
  for (let o = 0; o < tar.length; o += BLOCK_BYTES) {
    const n = Math.min(BLOCK_BYTES, tar.length - o);
    blocks.push({ compressedOffset: o, compressedSize: n, uncompressedSize: n });
  }
  const frozen = entries as Map<string, FileEntry>;
  return {
    format: 'raw',
    layerDigest: sha256(tar),
    layerSize: tar.length,
    blocks,
    entries: frozen,
    children: (dir) => (frozen.get(dir)?.type === 'dir' ? (kids.get(dir) ?? []) : undefined),
    decodeBlock: (_block, compressed) => Promise.resolve(compressed),
  };
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

export function sha256(data: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

// ---- in-memory content ------------------------------------------------------------------------

/** Called before each read; may throw (a failing source) or wait (a stalled one). */
export type ReadHook = (entry: FileEntry, offset: number, length: number, signal: AbortSignal | undefined) => Promise<void> | void;

/** A LayerContent over an in-memory tar (TEST-ONLY; core's BlockFetcher replaces it). */
export class MemoryLayerContent implements LayerContent {
  readonly index: LayerIndex;
  readonly tar: Buffer;
  hook: ReadHook | undefined;
  reads = 0;

  constructor(tar: Buffer) {
    this.tar = tar;
    this.index = indexTar(tar);
  }

  async read(entry: FileEntry, offset: number, length: number, options: { signal?: AbortSignal }): Promise<Uint8Array> {
    this.reads++;
    if (this.hook !== undefined) await this.hook(entry, offset, length, options.signal);
    const out = new Uint8Array(length);
    const end = offset + length;
    for (const e of entry.extents ?? []) {
      const from = Math.max(offset, e.fileOffset);
      const to = Math.min(end, e.fileOffset + e.length);
      if (from >= to) continue;
      const block = this.index.blocks[e.block] as BlockInfo;
      const start = block.compressedOffset + e.blockOffset + (from - e.fileOffset);
      out.set(this.tar.subarray(start, start + (to - from)), from - offset);
    }
    return out;
  }
}

/** A layer from tar members: the tar, its index and a content source. */
export function memoryLayer(members: readonly TarMember[]): MemoryLayerContent {
  return new MemoryLayerContent(writeTar(members));
}
