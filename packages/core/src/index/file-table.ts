import { ErrorCode, ImgstreamError } from '../errors.js';
import type { EntryType, Extent, FileEntry } from './model.js';

/** A region of file content located in the layer's uncompressed stream (zran, raw). */
export interface StreamRegion {
  readonly fileOffset: number;
  readonly length: number;
  readonly streamOffset: number;
}

/** What a format reader knows about one tar entry, before path normalisation and whiteout handling. */
export interface EntryInput {
  /** Entry name as stored in the archive. */
  readonly name: string;
  readonly type: Exclude<EntryType, 'whiteout'>;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeMs: number;
  readonly size: number;
  readonly linkName?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  readonly xattrs?: ReadonlyMap<string, Uint8Array>;
  /** Content location in the uncompressed stream (zran, raw). */
  readonly regions?: readonly StreamRegion[];
  /** Content location as extents (eStargz). */
  readonly extents?: readonly Extent[];
}

/** A file-table entry before extents are resolved: carries stream regions. */
export interface DraftEntry extends FileEntry {
  readonly regions?: readonly StreamRegion[];
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** Normalises an archive path; throws IMGSTREAM_INVALID_INDEX for `..` parts. */
export function normalisePath(name: string): string {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw new ImgstreamError(ErrorCode.INVALID_INDEX, `path ${JSON.stringify(name)} contains ".."`, { path: name });
    parts.push(part);
  }
  return parts.join('/');
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i === -1 ? '' : path.slice(0, i);
}

function baseOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/**
 * Builds a layer's file table from entries in archive order: normalised paths, implicit parent
 * directories, duplicates (last wins; a later directory entry updates metadata and keeps the
 * children), OCI whiteouts (`.wh.NAME` -> `whiteout` at `dir/NAME`; `.wh..wh..opq` -> parent opaque).
 */
export class FileTableBuilder {
  readonly entries = new Map<string, DraftEntry>();
  readonly #children = new Map<string, Set<string>>();

  constructor() {
    this.#set({ path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeMs: 0, size: 0 });
  }

  add(input: EntryInput): void {
    const path = normalisePath(input.name);
    const base = baseOf(path);
    if (path === '' && input.type !== 'dir') throw new ImgstreamError(ErrorCode.INVALID_INDEX, `the layer root is a ${input.type}`, { path: input.name });
    if (base === OPAQUE) {
      const dir = parentOf(path);
      this.#ensureDir(dir);
      const cur = this.entries.get(dir);
      if (cur !== undefined) this.entries.set(dir, { ...cur, opaque: true });
      return;
    }
    if (base.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) return; // other AUFS metadata: not content
    if (base.startsWith(WHITEOUT_PREFIX)) {
      const hidden = base.slice(WHITEOUT_PREFIX.length);
      if (hidden === '' || hidden === '.' || hidden === '..') throw new ImgstreamError(ErrorCode.INVALID_INDEX, `invalid whiteout ${JSON.stringify(input.name)}`, { path: input.name });
      const dir = parentOf(path);
      this.#put({ path: dir === '' ? hidden : `${dir}/${hidden}`, type: 'whiteout', mode: input.mode, uid: input.uid, gid: input.gid, mtimeMs: input.mtimeMs, size: 0 });
      return;
    }
    const entry: DraftEntry = {
      path,
      type: input.type,
      mode: input.mode & 0o7777,
      uid: input.uid,
      gid: input.gid,
      mtimeMs: input.mtimeMs,
      size: input.type === 'file' ? input.size : 0,
      ...(input.type === 'symlink' ? { linkTarget: input.linkName ?? '' } : {}),
      ...(input.type === 'hardlink' ? { linkTarget: this.#hardlinkTarget(input) } : {}),
      ...(input.type === 'char' || input.type === 'block' ? { devMajor: input.devMajor ?? 0, devMinor: input.devMinor ?? 0 } : {}),
      ...(input.xattrs !== undefined && input.xattrs.size > 0 ? { xattrs: input.xattrs } : {}),
      ...(input.type === 'file' && input.regions !== undefined ? { regions: input.regions } : {}),
      ...(input.type === 'file' && input.extents !== undefined ? { extents: input.extents } : {}),
    };
    this.#put(entry);
  }

  #hardlinkTarget(input: EntryInput): string {
    const target = normalisePath(input.linkName ?? '');
    const t = this.entries.get(target);
    if (target === '' || t === undefined || t.type === 'dir' || t.type === 'whiteout') {
      throw new ImgstreamError(ErrorCode.INVALID_INDEX, `hard link ${JSON.stringify(input.name)} points to ${JSON.stringify(input.linkName)}, which is not an earlier non-directory entry`, { path: input.name });
    }
    // a link to a link resolves to the final target
    return t.type === 'hardlink' && t.linkTarget !== undefined ? t.linkTarget : target;
  }

  #put(entry: DraftEntry): void {
    this.#ensureDir(parentOf(entry.path));
    const cur = this.entries.get(entry.path);
    if (cur !== undefined && cur.type === 'dir') {
      if (entry.type === 'dir') {
        // a later directory entry updates metadata; children and the opaque mark stay
        this.#set({ ...entry, ...(cur.opaque === true ? { opaque: true } : {}) });
        return;
      }
      this.#removeTree(entry.path);
    }
    this.#set(entry);
  }

  #set(entry: DraftEntry): void {
    const isNew = !this.entries.has(entry.path);
    this.entries.set(entry.path, entry);
    if (entry.type === 'dir' && !this.#children.has(entry.path)) this.#children.set(entry.path, new Set());
    if (isNew && entry.path !== '') this.#children.get(parentOf(entry.path))?.add(baseOf(entry.path));
  }

  #removeTree(path: string): void {
    const kids = this.#children.get(path);
    if (kids !== undefined) {
      for (const k of kids) {
        const child = path === '' ? k : `${path}/${k}`;
        this.#removeTree(child);
        this.entries.delete(child);
      }
      this.#children.delete(path);
    }
  }

  #ensureDir(path: string): void {
    const cur = this.entries.get(path);
    if (cur !== undefined) {
      if (cur.type !== 'dir') throw new ImgstreamError(ErrorCode.INVALID_INDEX, `${JSON.stringify(path)} is a ${cur.type} but has children`, { path });
      return;
    }
    this.#ensureDir(parentOf(path));
    this.#set({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeMs: 0, size: 0 });
  }

  /** Sorted child names per directory. */
  childrenMap(): Map<string, readonly string[]> {
    const out = new Map<string, readonly string[]>();
    for (const [dir, set] of this.#children) out.set(dir, [...set].sort());
    return out;
  }
}

/** Splits stream regions into extents over blocks that partition the uncompressed stream. */
export function regionsToExtents(regions: readonly StreamRegion[], blockStarts: readonly number[], blockSizes: readonly number[], path: string): Extent[] {
  const out: Extent[] = [];
  for (const reg of regions) {
    let s = reg.streamOffset;
    let f = reg.fileOffset;
    let left = reg.length;
    let b = findBlock(blockStarts, s);
    while (left > 0) {
      const start = blockStarts[b];
      const size = blockSizes[b];
      if (start === undefined || size === undefined || s < start || s >= start + size) {
        throw new ImgstreamError(ErrorCode.INVALID_INDEX, `content of ${JSON.stringify(path)} lies outside the indexed stream`, { path });
      }
      const take = Math.min(left, start + size - s);
      out.push({ fileOffset: f, length: take, block: b, blockOffset: s - start });
      s += take;
      f += take;
      left -= take;
      b++;
    }
  }
  return out;
}

/** Index of the last block whose start is <= offset (binary search). */
export function findBlock(starts: readonly number[], offset: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((starts[mid] ?? 0) <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
