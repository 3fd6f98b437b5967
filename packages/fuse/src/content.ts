import type { FileEntry, LayerIndex } from '@imgstream/core';

/**
 * What {@link ImgstreamFs} needs to serve one layer: its index (the file table) and a way to read
 * the bytes of a regular file. The daemon wires this to core's block fetcher; tests use an
 * in-memory source.
 */
export interface LayerContent {
  /** The layer's index; its file table is what the layer directory shows. */
  readonly index: LayerIndex;
  /**
   * Reads `length` bytes at `offset` of the regular file `entry` (an entry of `index` of type
   * `file`; hard links are resolved to their target before this is called). `offset + length`
   * never exceeds `entry.size`. Must resolve with exactly `length` bytes (anything else is
   * reported as EIO), and should reject with `options.signal.reason` when the signal aborts.
   */
  read(entry: FileEntry, offset: number, length: number, options: { signal?: AbortSignal }): Promise<Uint8Array>;
  /**
   * Optional: like {@link read}, into `target` (the kernel's buffer, `target.byteLength` bytes),
   * resolving with the bytes written (anything but all of them is reported as EIO). Spares an
   * allocation and a copy per FUSE read. Must not write to `target` once `options.signal` has
   * aborted: the filesystem hands the buffer back to libfuse then.
   */
  readInto?(entry: FileEntry, offset: number, target: Uint8Array, options: { signal?: AbortSignal }): Promise<number>;
  /**
   * Optional: answers a read at once when the bytes are in memory already (e.g. ranges of a
   * replayed prefetch pack): fills `target` whole and returns true, or returns false without
   * writing to it (the read then goes through {@link readInto} or {@link read}). Spares a read
   * the promise, timer and abort plumbing of an asynchronous one.
   */
  readIntoNow?(entry: FileEntry, offset: number, target: Uint8Array): boolean;
}

/** Options of {@link ImgstreamFs.addLayer}. */
export interface AddLayerOptions {
  /**
   * A local directory that holds the layer unpacked (the local layer cache once the layer is
   * complete). When set, `images/` entries point to it instead of to the FUSE layer directory.
   * Default: none (entries point to `layers/sha256=<hex>`).
   */
  localDir?: string;
}
