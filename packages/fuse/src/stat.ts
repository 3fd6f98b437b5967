import type { FileEntry } from '@imgstream/core';

/** File-type bits of `st_mode`. */
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

/** The stat shape fuse-native turns into `struct stat` (times in ms since the epoch). */
export interface FuseStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino: number;
  rdev: number;
  blksize: number;
  blocks: number;
  atime: number;
  mtime: number;
  ctime: number;
}

const BLOCK_SIZE = 4096;
const DIR_SIZE = 4096;

/** Linux `makedev` for the 32-bit `rdev` FUSE carries (major up to 4095, minor up to 2^20-1). */
export function makeDev(major: number, minor: number): number {
  return (((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12)) >>> 0;
}

/** st_mode file-type bits of an entry type (hard links must be resolved first). */
function typeBits(entry: FileEntry): number {
  switch (entry.type) {
    case 'file':
      return S_IFREG;
    case 'dir':
      return S_IFDIR;
    case 'symlink':
      return S_IFLNK;
    case 'char':
    case 'whiteout':
      return S_IFCHR;
    case 'block':
      return S_IFBLK;
    case 'fifo':
      return S_IFIFO;
    case 'hardlink':
      return S_IFREG;
  }
}

/** Milliseconds as fuse-native carries them: whole, not negative. */
function timeMs(ms: number): number {
  return Number.isFinite(ms) && ms > 0 ? Math.floor(ms) : 0;
}

/** The stat of a (resolved) layer entry. */
export function entryStat(entry: FileEntry, ino: number, nlink: number): FuseStat {
  let size = 0;
  let blocks = 0;
  let rdev = 0;
  let mode = typeBits(entry) | (entry.mode & 0o7777);
  switch (entry.type) {
    case 'file':
    case 'hardlink': {
      size = entry.size;
      let stored = size;
      if (entry.extents !== undefined) {
        stored = 0;
        for (const e of entry.extents) stored += e.length;
      }
      blocks = Math.ceil(stored / 512);
      break;
    }
    case 'dir':
      size = DIR_SIZE;
      blocks = DIR_SIZE / 512;
      break;
    case 'symlink':
      // Linux symlinks are always rwxrwxrwx, whatever mode the tar header carries
      mode = typeBits(entry) | 0o777;
      size = Buffer.byteLength(entry.linkTarget ?? '');
      break;
    case 'char':
    case 'block':
      rdev = makeDev(entry.devMajor ?? 0, entry.devMinor ?? 0);
      break;
    case 'whiteout':
      // overlayfs' whiteout: a character device 0/0
      mode = S_IFCHR;
      break;
    case 'fifo':
      break;
  }
  const t = timeMs(entry.mtimeMs);
  return { mode, uid: entry.uid, gid: entry.gid, size, nlink, ino, rdev, blksize: BLOCK_SIZE, blocks, atime: t, mtime: t, ctime: t };
}

/** The stat of a directory the filesystem makes up (`/`, `layers/`, `images/`, an image directory). */
export function syntheticDirStat(ino: number, nlink: number, mtimeMs: number): FuseStat {
  const t = timeMs(mtimeMs);
  return { mode: S_IFDIR | 0o755, uid: 0, gid: 0, size: DIR_SIZE, nlink, ino, rdev: 0, blksize: BLOCK_SIZE, blocks: DIR_SIZE / 512, atime: t, mtime: t, ctime: t };
}

/** The stat of a symlink the filesystem makes up (an `images/` entry). */
export function syntheticLinkStat(ino: number, target: string, mtimeMs: number): FuseStat {
  const t = timeMs(mtimeMs);
  return { mode: S_IFLNK | 0o777, uid: 0, gid: 0, size: Buffer.byteLength(target), nlink: 1, ino, rdev: 0, blksize: BLOCK_SIZE, blocks: 0, atime: t, mtime: t, ctime: t };
}
