import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Digester, digestMismatch, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError, isImgstreamError } from '../errors.js';
import { coreTarExtractor } from './core-tar-entries.js';
import { unpackLayer, type UnpackResult } from './layer-unpacker.js';

/**
 * Output chunk of the gunzip stream, in bytes. zlib's default (16 KiB) costs one stream callback,
 * one digest update and one tar-reader step per 16 KiB of tar.
 */
const GUNZIP_CHUNK_BYTES = 256 * 1024;

/** Options of {@link unpackLayerBlob}. */
export interface LayerBlobUnpackOptions {
  /** Digest of the blob: the compressed bytes are hashed and checked when they end. */
  readonly digest: Digest;
  /** sha256 of the uncompressed tar (the diff ID); checked when given. */
  readonly diffId?: Digest;
  /** An existing empty directory the layer is unpacked into. */
  readonly root: string;
  /** A directory outside `root` on the same filesystem, for scratch files. */
  readonly scratchDir: string;
  readonly signal: AbortSignal;
}

/** What {@link unpackLayerBlob} verified and wrote. */
export interface LayerBlobUnpackResult extends UnpackResult {
  /** The blob digest, verified. */
  readonly digest: Digest;
  /** sha256 of the uncompressed tar, verified against the requested diff ID when there was one. */
  readonly diffId: Digest;
  /** Compressed bytes read. */
  readonly blobBytes: number;
}

/**
 * The CPU-heavy half of a layer download, from the blob's bytes to an unpacked directory: hashes
 * the blob (checked against `digest` when the bytes end, before the end reaches the unpacker),
 * gunzips it when it starts with the gzip magic, hashes the tar (the diff ID), parses it with core's
 * tar reader and unpacks it into `root` ({@link unpackLayer}). A bad gzip stream is
 * IMGSTREAM_CORRUPT_DATA; a wrong digest or diff ID IMGSTREAM_DIGEST_MISMATCH; errors of the
 * source are passed through. The LayerDownloader runs it on its own thread or in the unpack worker
 * (`unpack-worker.ts`); the caller removes `root` on failure.
 */
export async function unpackLayerBlob(blob: AsyncIterable<Uint8Array>, options: LayerBlobUnpackOptions): Promise<LayerBlobUnpackResult> {
  const { digest, root, scratchDir, signal } = options;
  const blobDigester = new Digester();
  let blobDigest: Digest | undefined;
  async function* verified(): AsyncGenerator<Uint8Array> {
    for await (const chunk of blob) {
      blobDigester.update(chunk);
      yield chunk;
    }
    const actual = blobDigester.digest();
    if (actual !== digest) throw digestMismatch(digest, actual, `layer blob`);
    blobDigest = actual;
  }
  const compressed = Readable.from(verified(), { objectMode: false, highWaterMark: 1 });
  const head = await peek(compressed);
  const gzip = head.byteLength >= 2 && head[0] === 0x1f && head[1] === 0x8b;
  const diffDigester = new Digester();
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      diffDigester.update(chunk);
      cb(null, chunk);
    },
  });
  const { writable, entries } = coreTarExtractor();
  const stages = gzip ? [compressed, createGunzip({ chunkSize: GUNZIP_CHUNK_BYTES }), tap, writable] : [compressed, tap, writable];
  const piping = (pipeline as (...s: unknown[]) => Promise<void>)(...stages, { signal });
  const unpacking = unpackLayer(entries, root, { signal, scratchDir }).catch((err: unknown) => {
    (writable as unknown as { destroy(e?: unknown): void }).destroy(err);
    throw err;
  });
  const [p, u] = await Promise.allSettled([piping, unpacking]);
  if (u.status === 'rejected' && isImgstreamError(u.reason)) throw u.reason;
  if (p.status === 'rejected') throw gzipError(p.reason, digest);
  if (u.status === 'rejected') throw u.reason;
  const diffId = diffDigester.digest();
  if (options.diffId !== undefined && diffId !== options.diffId) throw digestMismatch(options.diffId, diffId, `uncompressed layer ${digest} (diff ID)`);
  if (blobDigest === undefined) throw new ImgstreamError(ErrorCode.INVALID_TAR, `layer ${digest} was unpacked before its blob ended`, { digest });
  return { ...u.value, digest: blobDigest, diffId, blobBytes: blobDigester.bytes };
}

function gzipError(err: unknown, digest: Digest): unknown {
  if (isImgstreamError(err)) return err;
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && code.startsWith('Z_')) {
    return new ImgstreamError(ErrorCode.CORRUPT_DATA, `layer ${digest} is not valid gzip: ${(err as Error).message}`, { digest, cause: err });
  }
  return err;
}

/** Reads the first chunk and puts it back, to sniff the compression. */
async function peek(stream: Readable): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const onReadable = (): void => {
      const chunk = stream.read() as Buffer | null;
      if (chunk === null) return;
      cleanup();
      stream.unshift(chunk);
      resolve(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(new Uint8Array(0));
    };
    const onError = (err: unknown): void => {
      cleanup();
      reject(err);
    };
    const cleanup = (): void => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
    };
    stream.on('readable', onReadable);
    stream.on('end', onEnd);
    stream.on('error', onError);
  });
}
