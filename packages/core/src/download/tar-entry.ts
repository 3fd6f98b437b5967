/**
 * The small entry interface the layer unpacker consumes, so that any tar reader can feed it
 * (today `tar-stream` through {@link ./tar-stream-entries.ts}; the core tar reader later).
 */
export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarEntryHeader {
  /** The name as stored in the tar (not yet normalised or checked). */
  readonly path: string;
  readonly type: TarEntryType;
  /** Permission and special bits (`& 0o7777`). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtimeMs: number;
  /** Content bytes that follow (regular files). */
  readonly size: number;
  /** Symlink target, or the tar name of a hard link's target. */
  readonly linkTarget?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  readonly xattrs?: ReadonlyMap<string, Uint8Array>;
}

export interface TarEntry {
  readonly header: TarEntryHeader;
  /** The content; must be consumed completely before the next entry is pulled. */
  readonly body: AsyncIterable<Uint8Array>;
}
