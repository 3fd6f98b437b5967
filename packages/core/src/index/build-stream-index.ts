import { createHash, type Hash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { defaults } from '../defaults.js';
import { digestMismatch, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError, invalidOption } from '../errors.js';
import { inflateWithCheckpoints, type GzipScanResult } from './gzip-checkpoints.js';
import { channel, publish } from '../diagnostics.js';
import { scanTar } from './scan-tar.js';
import { StreamLayerIndex, type StreamBlock, type StreamEntry } from './stream-layer-index.js';

/** Options of {@link buildZranIndex} and {@link buildRawIndex}. */
export interface BuildIndexOptions {
  /** The layer's digest; when given, the stream is verified against it (IMGSTREAM_DIGEST_MISMATCH). */
  expectedDigest?: Digest;
  /** zran: uncompressed bytes between checkpoints; raw: block size. Defaults: `defaults.index.zranSpanBytes` / `defaults.index.rawBlockBytes`. */
  spanBytes?: number;
  /** Largest uncompressed layer size in bytes. Default `defaults.index.maxUncompressedLayerBytes`. */
  maxUncompressedBytes?: number;
  /** Largest uncompressed/compressed ratio (zran). Default `defaults.index.maxCompressionRatio`. */
  maxRatio?: number;
  /** Output below which the ratio is not enforced, in bytes. Default `defaults.index.ratioFloorBytes`. */
  ratioFloorBytes?: number;
  /** Largest number of tar entries. Default `defaults.index.maxIndexEntries`. */
  maxEntries?: number;
  signal?: AbortSignal;
}

async function* abortable(source: AsyncIterable<Uint8Array>, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    signal?.throwIfAborted();
    yield chunk;
  }
  signal?.throwIfAborted();
}

const indexBuilt = channel('core:index-built');

function built(index: StreamLayerIndex, startMs: number): StreamLayerIndex {
  publish(indexBuilt, {
    format: index.format,
    layerDigest: index.layerDigest,
    layerSize: index.layerSize,
    blocks: index.blocks.length,
    entries: index.entries.size,
    durationMs: performance.now() - startMs,
  });
  return index;
}

/** Largest span: a span may overshoot it by one deflate block (a few MiB) and must stay under `maxBlockBytes`. */
const MAX_SPAN_BYTES = 32 << 20;

function checkSpan(spanBytes: number): void {
  if (!Number.isSafeInteger(spanBytes) || spanBytes < 4096 || spanBytes > MAX_SPAN_BYTES) {
    throw invalidOption('spanBytes', `must be an integer between 4096 and ${MAX_SPAN_BYTES}`);
  }
}

/**
 * Builds a zran index of a plain gzip layer in one pass over the blob: file table plus a
 * checkpoint every `spanBytes` of uncompressed output, with a sha256 per span.
 */
export async function buildZranIndex(blob: AsyncIterable<Uint8Array>, options: BuildIndexOptions = {}): Promise<StreamLayerIndex> {
  const start = performance.now();
  const spanBytes = options.spanBytes ?? defaults.index.zranSpanBytes;
  checkSpan(spanBytes);
  const result: Partial<GzipScanResult> = {};
  const stream = inflateWithCheckpoints(
    abortable(blob, options.signal),
    spanBytes,
    {
      maxUncompressedBytes: options.maxUncompressedBytes ?? defaults.index.maxUncompressedLayerBytes,
      maxRatio: options.maxRatio ?? defaults.index.maxCompressionRatio,
      ratioFloorBytes: options.ratioFloorBytes ?? defaults.index.ratioFloorBytes,
    },
    result,
  );
  const table = await scanTar(stream, options.maxEntries ?? defaults.index.maxIndexEntries);
  // the tar reader drains the stream to its end, so the scan result is complete here
  const { spans, compressedSize, uncompressedSize, digest } = result;
  if (spans === undefined || compressedSize === undefined || uncompressedSize === undefined || digest === undefined) {
    throw new ImgstreamError(ErrorCode.CORRUPT_DATA, 'gzip stream was not read to its end');
  }
  if (options.expectedDigest !== undefined && digest !== options.expectedDigest) throw digestMismatch(options.expectedDigest, digest, 'layer blob');
  const tooBig = spans.find((s) => s.uncompressedSize > defaults.index.maxBlockBytes);
  if (tooBig !== undefined) {
    // a single deflate block larger than the limit (not something zlib writes): no restart point inside it
    throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `gzip span at ${tooBig.fetchOffset} decodes to ${tooBig.uncompressedSize} bytes, more than ${defaults.index.maxBlockBytes}`, {
      limit: defaults.index.maxBlockBytes,
    });
  }
  const blocks: StreamBlock[] = spans.map((s) => ({
    fetchOffset: s.fetchOffset,
    fetchSize: s.fetchSize,
    uncompressedOffset: s.uncompressedOffset,
    uncompressedSize: s.uncompressedSize,
    digest: s.digest,
    bits: s.bits,
    member: s.member,
    window: s.window,
  }));
  return built(new StreamLayerIndex({
    format: 'zran',
    layerDigest: digest,
    layerSize: compressedSize,
    uncompressedSize,
    spanBytes,
    blocks,
    entries: [...table.entries.values()] as StreamEntry[],
  }), start);
}

/** Builds a raw index of an uncompressed tar layer: file table plus fixed-size blocks with a sha256 each. */
export async function buildRawIndex(blob: AsyncIterable<Uint8Array>, options: BuildIndexOptions = {}): Promise<StreamLayerIndex> {
  const start = performance.now();
  const blockBytes = options.spanBytes ?? defaults.index.rawBlockBytes;
  checkSpan(blockBytes);
  const maxBytes = options.maxUncompressedBytes ?? defaults.index.maxUncompressedLayerBytes;
  const blocks: StreamBlock[] = [];
  const whole = createHash('sha256');
  let total = 0;
  let cur: Hash = createHash('sha256');
  let curLen = 0;
  const flush = (): void => {
    blocks.push({ fetchOffset: total - curLen, fetchSize: curLen, uncompressedOffset: total - curLen, uncompressedSize: curLen, digest: `sha256:${cur.digest('hex')}` });
    cur = createHash('sha256');
    curLen = 0;
  };
  async function* hashing(): AsyncGenerator<Uint8Array> {
    for await (const chunk of abortable(blob, options.signal)) {
      whole.update(chunk);
      let p = 0;
      while (p < chunk.byteLength) {
        const take = Math.min(chunk.byteLength - p, blockBytes - curLen);
        cur.update(chunk.subarray(p, p + take));
        curLen += take;
        total += take;
        p += take;
        if (curLen === blockBytes) flush();
      }
      if (total > maxBytes) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `layer is larger than ${maxBytes} bytes`, { limit: maxBytes });
      yield chunk;
    }
    if (curLen > 0) flush();
  }
  const table = await scanTar(hashing(), options.maxEntries ?? defaults.index.maxIndexEntries);
  const digest: Digest = `sha256:${whole.digest('hex')}`;
  if (options.expectedDigest !== undefined && digest !== options.expectedDigest) throw digestMismatch(options.expectedDigest, digest, 'layer blob');
  return built(new StreamLayerIndex({
    format: 'raw',
    layerDigest: digest,
    layerSize: total,
    uncompressedSize: total,
    spanBytes: blockBytes,
    blocks,
    entries: [...table.entries.values()] as StreamEntry[],
  }), start);
}
