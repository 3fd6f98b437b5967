/** Every default of @imgstream/core, in one place. Units are in the names. */
export const defaults = Object.freeze({
  /** zran: uncompressed bytes between two checkpoints of a plain gzip layer (see docs/index-format.md). */
  zranSpanBytes: 1 << 20,
  /** raw: size of a block of an uncompressed layer. */
  rawBlockBytes: 128 << 10,
  /** Largest uncompressed size a layer may have when it is indexed or decoded. */
  maxUncompressedLayerBytes: 64 * 2 ** 30,
  /** Largest uncompressed/compressed ratio once `ratioFloorBytes` were produced (decompression bombs). */
  maxCompressionRatio: 250,
  /** Output below which the compression ratio is not enforced. */
  ratioFloorBytes: 256 << 20,
  /** Largest compressed eStargz TOC or serialised index accepted. */
  maxIndexBytes: 64 << 20,
  /** Largest decompressed eStargz TOC JSON or serialised index accepted. */
  maxDecodedIndexBytes: 512 << 20,
  /** Largest number of entries (paths, chunks, blocks) an index may have. */
  maxIndexEntries: 4_000_000,
  /** Largest PAX / GNU long-name extension payload in a tar. */
  maxTarExtensionBytes: 1 << 20,
});
