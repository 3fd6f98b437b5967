import type { Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { BlockInfo, FileEntry, LayerFormat, LayerIndex } from './model.js';

/** What a format supplies to build a {@link TableLayerIndex}. */
export interface TableLayerIndexInit {
  format: LayerFormat;
  layerDigest: Digest;
  layerSize: number;
  blocks: readonly BlockInfo[];
  entries: ReadonlyMap<string, FileEntry>;
  children: ReadonlyMap<string, readonly string[]>;
  /** eStargz: the blocks holding the prioritized files (before `.prefetch.landmark`) are `blocks[0..n)`. */
  prioritizedBlocks?: number;
  /** Decodes and verifies one block (already range-checked). */
  decode(block: number, compressed: Uint8Array): Uint8Array | Promise<Uint8Array>;
}

/** A {@link LayerIndex} over a ready file table and block map; formats differ only in `decode`. */
export class TableLayerIndex implements LayerIndex {
  readonly format: LayerFormat;
  readonly layerDigest: Digest;
  readonly layerSize: number;
  readonly blocks: readonly BlockInfo[];
  readonly entries: ReadonlyMap<string, FileEntry>;
  /**
   * eStargz layers with a `.prefetch.landmark`: the number of leading blocks that hold the files
   * placed before it (the prioritized files); undefined without a landmark.
   */
  readonly prioritizedBlocks: number | undefined;
  readonly #children: ReadonlyMap<string, readonly string[]>;
  readonly #decode: TableLayerIndexInit['decode'];

  constructor(init: TableLayerIndexInit) {
    this.prioritizedBlocks = init.prioritizedBlocks;
    this.format = init.format;
    this.layerDigest = init.layerDigest;
    this.layerSize = init.layerSize;
    this.blocks = init.blocks;
    this.entries = init.entries;
    this.#children = init.children;
    this.#decode = init.decode;
  }

  children(dirPath: string): readonly string[] | undefined {
    return this.#children.get(dirPath);
  }

  async decodeBlock(block: number, compressed: Uint8Array): Promise<Uint8Array> {
    const info = this.blocks[block];
    if (info === undefined || !Number.isInteger(block)) {
      throw new ImgstreamError(ErrorCode.INVALID_INDEX, `block ${block} does not exist (layer has ${this.blocks.length})`, { digest: this.layerDigest });
    }
    if (compressed.byteLength !== info.compressedSize) {
      throw new ImgstreamError(ErrorCode.CORRUPT_DATA, `block ${block} of ${this.layerDigest}: got ${compressed.byteLength} bytes, expected ${info.compressedSize}`, {
        digest: this.layerDigest,
        range: { offset: info.compressedOffset, length: info.compressedSize },
      });
    }
    const out = await this.#decode(block, compressed);
    if (out.byteLength !== info.uncompressedSize) {
      throw new ImgstreamError(ErrorCode.CORRUPT_DATA, `block ${block} decoded to ${out.byteLength} bytes, expected ${info.uncompressedSize}`, { digest: this.layerDigest });
    }
    return out;
  }
}
