import { ErrorCode, ImgstreamError } from '@imgstream/core';
import type { Digest, FileEntry, LayerIndex } from '@imgstream/core';
import type { LayerContent } from './content.js';
import { entryStat } from './stat.js';
import type { FuseStat } from './stat.js';

/** The opaque-directory marker overlayfs reads from lower layers. */
export const OPAQUE_XATTR = 'trusted.overlay.opaque';
const OPAQUE_VALUE = new Uint8Array([0x79]); // 'y'

/**
 * True when a layer has something only extended attributes can show: an entry with xattrs
 * (`security.capability`, `user.*`, ...) or an opaque directory (overlayfs reads the
 * `trusted.overlay.opaque` marker). Such a layer needs a mount that serves xattrs
 * (`ImgstreamFsOptions.xattrs`).
 */
export function layerNeedsXattrs(index: LayerIndex): boolean {
  for (const e of index.entries.values()) {
    if ((e.xattrs !== undefined && e.xattrs.size > 0) || (e.type === 'dir' && e.opaque === true)) return true;
  }
  return false;
}

/** One path of a layer as the filesystem serves it. */
export interface LayerNode {
  /** The entry whose metadata and content the path shows (a hard link's target). */
  readonly entry: FileEntry;
  readonly ino: number;
  readonly nlink: number;
}

/**
 * A mounted layer: its content source plus what the filesystem derives from the index once
 * (inode numbers, link counts, resolved hard links), so that every request is a map lookup.
 */
export class LayerView {
  readonly digest: Digest;
  readonly content: LayerContent;
  localDir: string | undefined;
  /** Number of inode numbers this layer uses, from `inoBase`. */
  readonly inoCount: number;
  readonly inoBase: number;
  /** Sum of regular file sizes, for statfs. */
  readonly totalBytes: number;
  private readonly inoByPath = new Map<string, number>();
  /** Extra links per target path (hard links pointing to it). */
  private readonly extraLinks = new Map<string, number>();
  /** Sub-directory counts per directory path. */
  private readonly subdirs = new Map<string, number>();

  constructor(digest: Digest, content: LayerContent, inoBase: number, localDir?: string) {
    this.digest = digest;
    this.content = content;
    this.inoBase = inoBase;
    this.localDir = localDir;
    const { entries } = content.index;
    const root = entries.get('');
    if (root === undefined || root.type !== 'dir') throw invalid(digest, 'the index has no root directory');
    let i = 0;
    let total = 0;
    for (const [path, entry] of entries) {
      this.inoByPath.set(path, inoBase + i++);
      if (entry.type === 'dir' && path !== '') {
        const parent = parentOf(path);
        this.subdirs.set(parent, (this.subdirs.get(parent) ?? 0) + 1);
      } else if (entry.type === 'hardlink') {
        const target = this.resolve(entry);
        this.extraLinks.set(target.path, (this.extraLinks.get(target.path) ?? 0) + 1);
      } else if (entry.type === 'file') {
        total += entry.size;
      }
    }
    this.inoCount = i;
    this.totalBytes = total;
  }

  /** The node at `path` (relative to the layer root, `''` for the root), or undefined. */
  lookup(path: string): LayerNode | undefined {
    const entry = this.content.index.entries.get(path);
    if (entry === undefined) return undefined;
    const target = entry.type === 'hardlink' ? this.resolve(entry) : entry;
    const ino = this.inoByPath.get(target.path) as number;
    let nlink: number;
    if (target.type === 'dir') nlink = 2 + (this.subdirs.get(target.path) ?? 0);
    else nlink = 1 + (this.extraLinks.get(target.path) ?? 0);
    return { entry: target, ino, nlink };
  }

  stat(node: LayerNode): FuseStat {
    return entryStat(node.entry, node.ino, node.nlink);
  }

  /** Extended attributes of a node, with the overlay opaque marker for opaque directories. */
  xattrs(node: LayerNode): ReadonlyMap<string, Uint8Array> | undefined {
    const own = node.entry.xattrs;
    if (node.entry.type === 'dir' && node.entry.opaque === true) {
      const all = new Map(own ?? []);
      all.set(OPAQUE_XATTR, OPAQUE_VALUE);
      return all;
    }
    return own;
  }

  children(path: string): readonly string[] | undefined {
    return this.content.index.children(path);
  }

  /** Follows a hard link (and chains of them) to the entry it shares its inode with. */
  private resolve(link: FileEntry): FileEntry {
    let e = link;
    for (let hops = 0; e.type === 'hardlink'; hops++) {
      const target = e.linkTarget === undefined ? undefined : this.content.index.entries.get(e.linkTarget);
      if (target === undefined || target.type === 'dir' || hops > 32) {
        throw invalid(this.digest, `hard link ${link.path} points to a missing or invalid target ${String(e.linkTarget)}`);
      }
      e = target;
    }
    return e;
  }
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

function invalid(digest: Digest, message: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.INVALID_INDEX, `layer ${digest}: ${message}`, { digest });
}
