// Builds tar archives from entry lists, byte for byte, for tests: ustar, PAX (long names, long
// links, xattrs, sub-second mtimes, large uid/gid), GNU long names/links, every entry type, and
// sparse files (GNU old 'S', PAX 0.1 and 1.0). Written from the POSIX/GNU format descriptions.
import { readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';

export type TarEntrySpec =
  | (Common & { type: 'file'; content?: Uint8Array | string })
  | (Common & { type: 'dir' })
  | (Common & { type: 'symlink'; target: string })
  | (Common & { type: 'hardlink'; target: string })
  | (Common & { type: 'char' | 'block'; devMajor: number; devMinor: number })
  | (Common & { type: 'fifo' })
  | (Common & { type: 'sparse'; size: number; regions: Array<{ offset: number; data: Uint8Array | string }>; sparseFormat: 'gnu' | 'pax-0.1' | 'pax-1.0' })
  /** Raw bytes appended as they are (must be a multiple of 512 to stay aligned). */
  | { type: 'raw'; bytes: Uint8Array; name?: undefined };

interface Common {
  name: string;
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Seconds since the epoch; a fraction forces a PAX mtime record. Default 1700000000. */
  mtime?: number;
  xattrs?: Record<string, string | Uint8Array>;
  /** How names/links that do not fit ustar are stored. Default 'pax'. */
  longNames?: 'pax' | 'gnu';
  /** Extra PAX records. */
  pax?: Record<string, string>;
}

export interface BuildTarOptions {
  /** Omit the two end-of-archive blocks. */
  noEndMarker?: boolean;
}

const enc = new TextEncoder();
const bytes = (v: Uint8Array | string | undefined): Uint8Array => (v === undefined ? new Uint8Array(0) : typeof v === 'string' ? enc.encode(v) : v);

function padTo512(b: Uint8Array): Uint8Array {
  const rem = b.byteLength % 512;
  if (rem === 0) return b;
  const out = new Uint8Array(b.byteLength + 512 - rem);
  out.set(b);
  return out;
}

function writeString(block: Uint8Array, off: number, len: number, s: string | Uint8Array): void {
  const b = bytes(s);
  if (b.byteLength > len) throw new Error(`field too long: ${String(s)}`);
  block.set(b, off);
}

function writeOctal(block: Uint8Array, off: number, len: number, v: number): void {
  const s = Math.trunc(v).toString(8);
  if (s.length > len - 1) {
    // GNU base-256
    let x = BigInt(Math.trunc(v));
    for (let i = len - 1; i >= 1; i--) {
      block[off + i] = Number(x & 0xffn);
      x >>= 8n;
    }
    block[off] = 0x80;
    return;
  }
  writeString(block, off, len, s.padStart(len - 1, '0'));
}

interface HeaderFields {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  uname: string;
  gname: string;
  devMajor: number;
  devMinor: number;
  magic: 'ustar' | 'gnu';
  prefix?: string;
}

export function tarHeader(f: HeaderFields, extra?: (block: Uint8Array) => void): Uint8Array {
  const b = new Uint8Array(512);
  writeString(b, 0, 100, f.name);
  writeOctal(b, 100, 8, f.mode);
  writeOctal(b, 108, 8, f.uid);
  writeOctal(b, 116, 8, f.gid);
  writeOctal(b, 124, 12, f.size);
  writeOctal(b, 136, 12, f.mtime);
  b[156] = f.typeflag.charCodeAt(0);
  writeString(b, 157, 100, f.linkname);
  writeString(b, 257, 8, f.magic === 'ustar' ? 'ustar\u000000' : 'ustar  \u0000');
  writeString(b, 265, 32, f.uname);
  writeString(b, 297, 32, f.gname);
  writeOctal(b, 329, 8, f.devMajor);
  writeOctal(b, 337, 8, f.devMinor);
  if (f.prefix !== undefined) writeString(b, 345, 155, f.prefix);
  extra?.(b);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  writeString(b, 148, 8, `${sum.toString(8).padStart(6, '0')}\u0000 `);
  return b;
}

/** Encodes PAX records (`LEN key=value\n`). */
export function paxRecords(records: Array<[string, string | Uint8Array]>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [k, v] of records) {
    const body = Buffer.concat([enc.encode(` ${k}=`), bytes(v), enc.encode('\n')]);
    let len = body.byteLength + 1;
    while (String(len).length + body.byteLength !== len) len = String(len).length + body.byteLength;
    parts.push(Buffer.concat([enc.encode(String(len)), body]));
  }
  return Buffer.concat(parts);
}

const FITS_OCTAL = (v: number, width: number) => Math.trunc(v).toString(8).length <= width - 1;

function entryBlocks(e: Exclude<TarEntrySpec, { type: 'raw' }>, seq: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const pax: Array<[string, string | Uint8Array]> = Object.entries(e.pax ?? {});
  const mtime = e.mtime ?? 1700000000;
  const uid = e.uid ?? 0;
  const gid = e.gid ?? 0;
  let name = e.name;
  const link = e.type === 'symlink' || e.type === 'hardlink' ? e.target : '';
  let linkname = link;
  let prefix: string | undefined;
  const useGnu = e.longNames === 'gnu';
  let magic: 'ustar' | 'gnu' = useGnu || e.type === 'sparse' && e.sparseFormat === 'gnu' ? 'gnu' : 'ustar';
  let content: Uint8Array = new Uint8Array(0);
  let size = 0;
  let typeflag = '0';
  let sparseExtra: ((b: Uint8Array) => void) | undefined;
  const sparseExt: Uint8Array[] = [];
  switch (e.type) {
    case 'file':
      content = bytes(e.content);
      size = content.byteLength;
      break;
    case 'dir':
      typeflag = '5';
      break;
    case 'symlink':
      typeflag = '2';
      break;
    case 'hardlink':
      typeflag = '1';
      break;
    case 'char':
      typeflag = '3';
      break;
    case 'block':
      typeflag = '4';
      break;
    case 'fifo':
      typeflag = '6';
      break;
    case 'sparse': {
      // like GNU tar, the map ends with an empty region at the real size (it carries trailing holes)
      const regs = [...e.regions.map((r) => ({ offset: r.offset, data: bytes(r.data) })), { offset: e.size, data: new Uint8Array(0) }];
      const data = Buffer.concat(regs.map((r) => r.data));
      if (e.sparseFormat === 'gnu') {
        typeflag = 'S';
        content = data;
        size = data.byteLength;
        const list = regs.map((r) => [r.offset, r.data.byteLength] as const);
        const first = list.slice(0, 4);
        const rest = list.slice(4);
        sparseExtra = (b) => {
          first.forEach(([o, n], i) => {
            writeOctal(b, 386 + i * 24, 12, o);
            writeOctal(b, 386 + i * 24 + 12, 12, n);
          });
          b[482] = rest.length > 0 ? 1 : 0;
          writeOctal(b, 483, 12, e.size);
        };
        for (let i = 0; i < rest.length; i += 21) {
          const blk = new Uint8Array(512);
          rest.slice(i, i + 21).forEach(([o, n], j) => {
            writeOctal(blk, j * 24, 12, o);
            writeOctal(blk, j * 24 + 12, 12, n);
          });
          blk[504] = i + 21 < rest.length ? 1 : 0;
          sparseExt.push(blk);
        }
      } else if (e.sparseFormat === 'pax-1.0') {
        pax.push(['GNU.sparse.major', '1'], ['GNU.sparse.minor', '0'], ['GNU.sparse.name', e.name], ['GNU.sparse.realsize', String(e.size)]);
        name = `./GNUSparseFile.${seq}/${e.name.split('/').pop() ?? 'f'}`;
        const map = padTo512(enc.encode(`${regs.length}\n${regs.map((r) => `${r.offset}\n${r.data.byteLength}\n`).join('')}`));
        content = Buffer.concat([map, data]);
        size = content.byteLength;
      } else {
        pax.push(['GNU.sparse.size', String(e.size)], ['GNU.sparse.numblocks', String(regs.length)], ['GNU.sparse.name', e.name], ['GNU.sparse.map', regs.map((r) => `${r.offset},${r.data.byteLength}`).join(',')]);
        name = `./GNUSparseFile.${seq}/${e.name.split('/').pop() ?? 'f'}`;
        content = data;
        size = data.byteLength;
      }
      break;
    }
  }
  if (e.type === 'sparse' && e.sparseFormat !== 'gnu') magic = 'ustar';
  // names
  const nameBytes = enc.encode(name).byteLength;
  if (nameBytes > 100) {
    const split = splitUstar(name);
    if (split !== undefined && !useGnu) {
      prefix = split.prefix;
      name = split.name;
    } else if (useGnu) {
      out.push(...gnuLong('L', name));
      name = name.slice(0, 99);
    } else {
      pax.push(['path', name]);
      name = name.slice(0, 99);
    }
  }
  if (enc.encode(linkname).byteLength > 100) {
    if (useGnu) out.push(...gnuLong('K', linkname));
    else pax.push(['linkpath', linkname]);
    linkname = linkname.slice(0, 99);
  }
  if (!Number.isInteger(mtime)) pax.push(['mtime', String(mtime)]);
  if (!FITS_OCTAL(uid, 8) && !useGnu) pax.push(['uid', String(uid)]);
  if (!FITS_OCTAL(gid, 8) && !useGnu) pax.push(['gid', String(gid)]);
  if (!FITS_OCTAL(size, 12) && !useGnu) pax.push(['size', String(size)]);
  for (const [k, v] of Object.entries(e.xattrs ?? {})) pax.push([`SCHILY.xattr.${k}`, v]);
  if (pax.length > 0) {
    const data = paxRecords(pax);
    out.push(
      tarHeader({ name: `PaxHeaders.${seq}/${name.slice(-80)}`, mode: 0o644, uid: 0, gid: 0, size: data.byteLength, mtime: Math.trunc(mtime), typeflag: 'x', linkname: '', uname: '', gname: '', devMajor: 0, devMinor: 0, magic: 'ustar' }),
      padTo512(data),
    );
  }
  const dev = e.type === 'char' || e.type === 'block' ? e : { devMajor: 0, devMinor: 0 };
  out.push(
    tarHeader(
      {
        name,
        mode: e.mode ?? (e.type === 'dir' ? 0o755 : 0o644),
        uid: FITS_OCTAL(uid, 8) || useGnu ? uid : 0,
        gid: FITS_OCTAL(gid, 8) || useGnu ? gid : 0,
        size: FITS_OCTAL(size, 12) || useGnu ? size : 0,
        mtime: Math.trunc(mtime),
        typeflag,
        linkname,
        uname: e.uname ?? '',
        gname: e.gname ?? '',
        devMajor: dev.devMajor,
        devMinor: dev.devMinor,
        magic,
        ...(prefix !== undefined ? { prefix } : {}),
      },
      sparseExtra,
    ),
  );
  out.push(...sparseExt);
  if (content.byteLength > 0) out.push(padTo512(content));
  return out;
}

function gnuLong(flag: 'L' | 'K', value: string): Uint8Array[] {
  const data = Buffer.concat([enc.encode(value), new Uint8Array(1)]);
  return [
    tarHeader({ name: '././@LongLink', mode: 0o644, uid: 0, gid: 0, size: data.byteLength, mtime: 0, typeflag: flag, linkname: '', uname: '', gname: '', devMajor: 0, devMinor: 0, magic: 'gnu' }),
    padTo512(data),
  ];
}

function splitUstar(name: string): { prefix: string; name: string } | undefined {
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== '/') continue;
    const p = name.slice(0, i);
    const n = name.slice(i + 1);
    if (enc.encode(p).byteLength <= 155 && enc.encode(n).byteLength <= 100 && n !== '') return { prefix: p, name: n };
  }
  return undefined;
}

/** Builds an uncompressed tar archive. */
export function buildTar(entries: readonly TarEntrySpec[], options: BuildTarOptions = {}): Uint8Array {
  const parts: Uint8Array[] = [];
  entries.forEach((e, i) => {
    if (e.type === 'raw') parts.push(e.bytes);
    else parts.push(...entryBlocks(e, i));
  });
  if (options.noEndMarker !== true) parts.push(new Uint8Array(1024));
  return new Uint8Array(Buffer.concat(parts));
}

/** gzip with node's zlib (one member). */
export function gzip(data: Uint8Array, level = 6): Uint8Array {
  return new Uint8Array(gzipSync(data, { level }));
}

/** Splits a buffer into chunks of `size` bytes (1 = one byte at a time) as an async source. */
export async function* chunked(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.byteLength; i += size) yield data.subarray(i, i + size);
}

/** Deterministic pseudo-random bytes (xorshift), compressible when `text` is set. */
export function pseudoRandom(length: number, seed: number, text = false): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  const words = ['alpha ', 'beta ', 'gamma ', 'delta ', 'layer ', 'block ', 'index\n', 'tar '];
  if (text) {
    let p = 0;
    while (p < length) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const w = enc.encode(words[(x >>> 0) % words.length] ?? ' ');
      out.set(w.subarray(0, Math.min(w.byteLength, length - p)), p);
      p += w.byteLength;
    }
    return out;
  }
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * A layer written as a directory tree: path -> content. `{ copyFrom }` copies a host file (e.g.
 * /usr/bin/busybox), `{ whiteout: true }` writes the OCI `.wh.NAME` entry, `{ opaque: true }` an
 * opaque directory, `{ dir: true }` an empty directory. Paths are relative to the image root.
 */
export type TreeEntry = string | { copyFrom: string; mode?: number } | { whiteout: true } | { opaque: true } | { dir: true };

/** The tar entries of a tree layer: every parent directory (0755) first, then the entries, sorted by name (root:root). */
export async function treeEntries(tree: Record<string, TreeEntry>): Promise<TarEntrySpec[]> {
  const dirs = new Set<string>();
  const files: TarEntrySpec[] = [];
  const addParents = (path: string): void => {
    const segs = path.split('/');
    for (let i = 1; i < segs.length; i++) dirs.add(segs.slice(0, i).join('/'));
  };
  for (const [path, entry] of Object.entries(tree)) {
    addParents(path);
    const base = path.slice(path.lastIndexOf('/') + 1);
    const parent = path.slice(0, path.length - base.length);
    if (typeof entry === 'string') files.push({ type: 'file', name: path, content: entry });
    else if ('copyFrom' in entry) files.push({ type: 'file', name: path, content: new Uint8Array(await readFile(entry.copyFrom)), mode: entry.mode ?? 0o755 });
    else if ('whiteout' in entry) files.push({ type: 'file', name: `${parent}.wh.${base}`, content: '' });
    else if ('opaque' in entry) {
      dirs.add(path);
      files.push({ type: 'file', name: `${path}/.wh..wh..opq`, content: '' });
    } else dirs.add(path);
  }
  const all: TarEntrySpec[] = [...[...dirs].map((d): TarEntrySpec => ({ type: 'dir', name: `${d}/` })), ...files];
  return all.sort((a, b) => (a.name! < b.name! ? -1 : a.name! > b.name! ? 1 : 0));
}
