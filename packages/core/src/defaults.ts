/**
 * Every default of every imgstream option, in one frozen object. Options objects document their
 * default by pointing here; constructors resolve them once.
 */
export const defaults = Object.freeze({
  /** Layer indexes (eStargz, zran, raw) and the tar reader. See docs/index-format.md. */
  index: Object.freeze({
    /** zran: uncompressed bytes between two checkpoints of a plain gzip layer (measured, see docs/index-format.md). */
    zranSpanBytes: 1 << 20,
    /** raw: size of a block of an uncompressed layer, in bytes. */
    rawBlockBytes: 128 << 10,
    /** Largest uncompressed size a layer may have when it is indexed, in bytes. */
    maxUncompressedLayerBytes: 64 * 2 ** 30,
    /** Largest uncompressed/compressed ratio once `ratioFloorBytes` were produced (decompression bombs). */
    maxCompressionRatio: 250,
    /** Output below which the compression ratio is not enforced, in bytes. */
    ratioFloorBytes: 256 << 20,
    /** Largest compressed eStargz TOC or serialised index accepted, in bytes. */
    maxIndexBytes: 64 << 20,
    /** Largest decompressed eStargz TOC JSON or serialised index accepted, in bytes. */
    maxDecodedIndexBytes: 512 << 20,
    /** Largest number of entries (paths, chunks, blocks) an index may have. */
    maxIndexEntries: 4_000_000,
    /** Largest decoded size of one block of any format (eStargz member, zran span, raw block), in bytes. */
    maxBlockBytes: 64 << 20,
    /** Largest PAX / GNU long-name extension payload in a tar, in bytes. */
    maxTarExtensionBytes: 1 << 20,
  }),
  snapshotter: Object.freeze({
    /** Where the snapshotter keeps its metadata file and snapshot directories. */
    rootDir: '/var/lib/imgstream/snapshotter',
    /** How many snapshot infos one List response message carries. */
    listBatchSize: 100,
    /** How long close() waits for in-flight RPCs before cancelling them, in ms. */
    closeGraceMs: 5_000,
  }),
});

export type Defaults = typeof defaults;
