import type { Digest } from '../digest.js';

/**
 * The layer index model: what every seekable layer format (eStargz, zran for plain gzip,
 * raw for uncompressed tar) is read into, so that the block fetcher, FUSE and the snapshotter
 * never care which format a layer uses.
 *
 * A layer index has two parts:
 *  - the **file table**: one {@link FileEntry} per path, with full POSIX metadata;
 *  - the **block map**: the layer blob is cut into {@link BlockInfo blocks}, the unit that is
 *    fetched (one compressed byte range), decoded (decompressed) and verified (digest);
 *    a regular file's content is a list of {@link Extent extents} that point into blocks.
 */

export type LayerFormat = 'estargz' | 'zran' | 'raw';

export type EntryType =
  | 'file'
  | 'dir'
  | 'symlink'
  /** A hard link: `linkTarget` is the normalised path of the entry it links to, in the same layer. */
  | 'hardlink'
  | 'char'
  | 'block'
  | 'fifo'
  /** An OCI whiteout (`.wh.NAME` in the tar): `path` is the hidden path (`dir/NAME`). */
  | 'whiteout';

/** One path of a layer. */
export interface FileEntry {
  /** Normalised path: no leading `/` or `./`, no trailing `/`, no `.`/`..` parts; `''` is the layer root. */
  readonly path: string;
  readonly type: EntryType;
  /** Permission and special bits (`mode & 0o7777`: setuid, setgid, sticky, rwx), without file-type bits. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Modification time in milliseconds since the epoch; may be fractional (sub-millisecond PAX mtimes). */
  readonly mtimeMs: number;
  /** Content size in bytes for regular files (the apparent size for sparse files); 0 otherwise. */
  readonly size: number;
  /** Symlink target (verbatim), or for `hardlink` the normalised path of the linked entry. */
  readonly linkTarget?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  /** Extended attributes (`SCHILY.xattr.*`), e.g. `security.capability`. Values are raw bytes. */
  readonly xattrs?: ReadonlyMap<string, Uint8Array>;
  /** For directories: the layer marks it opaque (`.wh..wh..opq`), hiding lower layers' contents. */
  readonly opaque?: boolean;
  /**
   * For regular files: where the content is. Extents are sorted by `fileOffset` and do not
   * overlap; bytes not covered by any extent (holes of sparse files) read as zeros.
   */
  readonly extents?: readonly Extent[];
}

/** A piece of a regular file's content that lies in one block. */
export interface Extent {
  /** Offset of the piece in the file. */
  readonly fileOffset: number;
  /** Length of the piece in bytes. */
  readonly length: number;
  /** Index into {@link LayerIndex.blocks}. */
  readonly block: number;
  /** Offset of the piece's first byte in the block's decoded (uncompressed) bytes. */
  readonly blockOffset: number;
}

/** The unit that is fetched, decoded and verified. */
export interface BlockInfo {
  /** Offset in the layer blob of the compressed bytes to fetch. */
  readonly compressedOffset: number;
  /** Number of compressed bytes to fetch. */
  readonly compressedSize: number;
  /** Number of bytes the block decodes to. */
  readonly uncompressedSize: number;
}

/** A seekable layer: file table plus block map, whatever the format. */
export interface LayerIndex {
  readonly format: LayerFormat;
  /** Digest of the (compressed) layer blob. */
  readonly layerDigest: Digest;
  /** Size of the layer blob in bytes. */
  readonly layerSize: number;
  /** Blocks sorted by `compressedOffset`. */
  readonly blocks: readonly BlockInfo[];
  /** Every path of the layer, including the root `''` and implicit parent directories. */
  readonly entries: ReadonlyMap<string, FileEntry>;
  /** Names (not paths) of a directory's children, sorted; undefined when `dirPath` is not a directory. */
  children(dirPath: string): readonly string[] | undefined;
  /**
   * Decodes one block from exactly its compressed bytes (`blocks[block]`'s range) and verifies it
   * against the digest the format carries. Throws IMGSTREAM_DIGEST_MISMATCH or
   * IMGSTREAM_CORRUPT_DATA; never returns unverified bytes.
   */
  decodeBlock(block: number, compressed: Uint8Array): Promise<Uint8Array>;
}
