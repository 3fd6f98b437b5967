import { mkdir } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { EventEmitter } from 'eventemitter3';
import type { RangeReader } from '../blob.js';
import type { LayerCache } from '../cache/layer-cache.js';
import { defaults } from '../defaults.js';
import { channel, publish } from '../diagnostics.js';
import { digestMismatch, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError, invalidOption, isImgstreamError } from '../errors.js';
import { delay } from '../fetch/delay.js';
import { FetchScheduler } from '../fetch/fetch-scheduler.js';
import { mapFsError } from './layer-unpacker.js';
import { unpackLayerBlob, type LayerBlobUnpackOptions } from './unpack-pipeline.js';
import { unpackLayerBlobInWorker } from './unpack-worker-client.js';

/** Opens the layer blob from `offset` on (so a broken stream can be resumed). */
export type LayerStreamOpener = (offset: number, options: { signal: AbortSignal }) => AsyncIterable<Uint8Array> | Readable;

/** One layer to download. */
export interface LayerDownloadRequest {
  /** Digest of the layer blob; verified. */
  readonly digest: Digest;
  /** sha256 of the uncompressed tar (the image config's diff ID); verified when given. */
  readonly diffId?: Digest;
  /** Size of the blob in bytes, when known (checked). */
  readonly size?: number;
  /** Where the bytes come from: random access (read in `downloadChunkBytes` ranges) or a resumable stream. */
  readonly source: RangeReader | LayerStreamOpener;
}

/** Options of {@link LayerDownloader}. */
export interface LayerDownloaderOptions {
  /** The local layer cache the layers are unpacked into. Required. */
  layerCache: LayerCache;
  /** Layers downloaded at once. Default 3 (GKE `max_layer_downloads`). */
  maxLayerDownloads?: number;
  /** The scheduler shared with the block fetcher; downloads run at background priority and yield to reads. */
  scheduler?: FetchScheduler;
  /** Bytes per range request when the source is a RangeReader. Default 8 MiB. */
  downloadChunkBytes?: number;
  /** Extra attempts per chunk / per resume of a failed stream. Default 3. */
  fetchRetries?: number;
  /** First retry delay in milliseconds, doubling. Default 100. */
  retryBaseDelayMs?: number;
  /**
   * Where the CPU- and syscall-heavy part of a download runs: gunzip, the sha256 of the blob and of
   * the tar (diff ID), tar parsing and the file system calls of the unpack. `true`: in a
   * `node:worker_threads` worker, one per running download (at most `maxLayerDownloads`, each a few
   * MiB of heap plus at most 16 MiB of compressed bytes in flight), so the event loop, which may
   * also answer FUSE reads, only fetches the bytes and hands them over. `false`: on the calling
   * thread. Errors, events and guarantees are the same either way.
   * Default `defaults.engine.unpackInWorker` (true).
   */
  unpackInWorker?: boolean;
}

export interface LayerDownloadProgress {
  readonly digest: Digest;
  readonly bytes: number;
  readonly totalBytes?: number;
}

export interface LayerDownloaderEvents {
  progress: (event: LayerDownloadProgress) => void;
  /** The layer is verified, unpacked and marked complete. */
  complete: (event: { digest: Digest; dir: string; bytes: number; durationMs: number }) => void;
  failed: (event: { digest: Digest; error: unknown }) => void;
  /** A chunk or stream failed and is being retried from `offset`. */
  retry: (event: { digest: Digest; offset: number; attempt: number; error: unknown }) => void;
}

interface Job {
  readonly controller: AbortController;
  waiters: number;
  settled: boolean;
  readonly promise: Promise<string>;
}

const downloadChannel = channel('core:download');

/**
 * Downloads whole layers into the local layer cache in the background: at most
 * `maxLayerDownloads` at once, at background priority (paused while foreground reads run),
 * resuming after faults, verifying the layer digest and the diff ID, unpacking through a staging
 * directory that is committed atomically. Concurrent requests for one layer share one download,
 * which is cancelled only when every requester has gone.
 */
export class LayerDownloader extends EventEmitter<LayerDownloaderEvents> {
  readonly layerCache: LayerCache;
  readonly scheduler: FetchScheduler;
  readonly maxLayerDownloads: number;
  readonly downloadChunkBytes: number;
  readonly fetchRetries: number;
  readonly retryBaseDelayMs: number;
  readonly unpackInWorker: boolean;
  readonly #jobs = new Map<Digest, Job>();
  /** Every download still running, also those no longer wanted (they may still be stopping). */
  readonly #running = new Set<Promise<string>>();
  #active = 0;
  readonly #queue: Array<() => void> = [];
  #closed = false;

  constructor(options: LayerDownloaderOptions) {
    super();
    if (options?.layerCache === undefined) throw invalidOption('layerCache', 'is required');
    this.layerCache = options.layerCache;
    this.scheduler = options.scheduler ?? new FetchScheduler();
    this.maxLayerDownloads = int('maxLayerDownloads', options.maxLayerDownloads ?? defaults.engine.maxLayerDownloads, 1);
    this.downloadChunkBytes = int('downloadChunkBytes', options.downloadChunkBytes ?? defaults.engine.downloadChunkBytes, 1);
    this.fetchRetries = int('fetchRetries', options.fetchRetries ?? defaults.engine.fetchRetries, 0);
    this.retryBaseDelayMs = int('retryBaseDelayMs', options.retryBaseDelayMs ?? defaults.engine.retryBaseDelayMs, 0);
    this.unpackInWorker = options.unpackInWorker ?? defaults.engine.unpackInWorker;
    if (typeof this.unpackInWorker !== 'boolean') throw invalidOption('unpackInWorker', 'must be a boolean');
  }

  /** Layers being downloaded or queued. */
  get pending(): Digest[] {
    return [...this.#jobs.keys()];
  }

  /** Downloads (or joins the download of) a layer; resolves with its local directory. */
  download(request: LayerDownloadRequest, options: { signal?: AbortSignal } = {}): Promise<string> {
    if (this.#closed) return Promise.reject(new ImgstreamError(ErrorCode.CLOSED, 'layer downloader is closed'));
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.layerCache.has(request.digest)) return Promise.resolve(this.layerCache.dirOf(request.digest));
    let job = this.#jobs.get(request.digest);
    if (job === undefined) {
      const controller = new AbortController();
      const promise = this.#run(request, controller.signal).finally(() => {
        job!.settled = true;
        if (this.#jobs.get(request.digest) === job) this.#jobs.delete(request.digest);
      });
      this.#running.add(promise);
      const forget = (): void => void this.#running.delete(promise);
      promise.then(forget, forget);
      job = { controller, waiters: 0, settled: false, promise };
      this.#jobs.set(request.digest, job);
    }
    const j = job;
    j.waiters++;
    return new Promise<string>((resolve, reject) => {
      const onAbort = (): void => {
        finish();
        reject(signal!.reason);
      };
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        signal?.removeEventListener('abort', onAbort);
        j.waiters--;
        if (j.waiters === 0 && !j.settled) {
          if (this.#jobs.get(request.digest) === j) this.#jobs.delete(request.digest);
          j.controller.abort(signal?.reason ?? new ImgstreamError(ErrorCode.CLOSED, 'download no longer wanted'));
        }
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      j.promise.then(
        (dir) => {
          finish();
          resolve(dir);
        },
        (err) => {
          finish();
          reject(err);
        },
      );
    });
  }

  /**
   * Cancels every download. Idempotent. The promise resolves once every download has stopped: its
   * unpack worker has exited and its staging directory is removed.
   */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      const reason = new ImgstreamError(ErrorCode.CLOSED, 'layer downloader closed');
      for (const job of this.#jobs.values()) job.controller.abort(reason);
    }
    return Promise.allSettled([...this.#running]).then(() => {});
  }

  async #slot(signal: AbortSignal): Promise<() => void> {
    if (this.#active >= this.maxLayerDownloads) {
      await new Promise<void>((resolve, reject) => {
        const go = (): void => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = (): void => {
          const i = this.#queue.indexOf(go);
          if (i >= 0) this.#queue.splice(i, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        this.#queue.push(go);
      });
    } else {
      this.#active++;
    }
    return () => {
      const next = this.#queue.shift();
      if (next !== undefined) next();
      else this.#active--;
    };
  }

  async #run(request: LayerDownloadRequest, signal: AbortSignal): Promise<string> {
    const release = await this.#slot(signal);
    const started = performance.now();
    let staging: string | undefined;
    try {
      await this.layerCache.ready();
      if (this.layerCache.has(request.digest)) return this.layerCache.dirOf(request.digest);
      staging = await this.layerCache.createStaging(request.digest);
      const root = `${staging}/root`;
      const { totalBytes, diffId } = await this.#fetchAndUnpack(request, root, staging, signal);
      const dir = await this.layerCache.commit(root, { digest: request.digest, ...(diffId !== undefined ? { diffId } : {}), sizeBytes: totalBytes, completedAtMs: Date.now() });
      const event = { digest: request.digest, dir, bytes: totalBytes, durationMs: performance.now() - started };
      publish(downloadChannel, { event: 'complete', ...event });
      this.emit('complete', event);
      return dir;
    } catch (err) {
      const error = signal.aborted ? signal.reason : mapFsError(err, this.layerCache.layerCacheDir);
      if (!signal.aborted) {
        publish(downloadChannel, { event: 'failed', digest: request.digest, error });
        this.emit('failed', { digest: request.digest, error });
      }
      throw error;
    } finally {
      if (staging !== undefined) await this.layerCache.discard(staging).catch(() => {});
      release();
    }
  }

  async #fetchAndUnpack(request: LayerDownloadRequest, root: string, scratchDir: string, signal: AbortSignal): Promise<{ totalBytes: number; diffId: Digest }> {
    await mkdir(root);
    const counter = { bytes: 0 };
    const blob = this.#blobBytes(request, signal, counter);
    const options: LayerBlobUnpackOptions = { digest: request.digest, ...(request.diffId !== undefined ? { diffId: request.diffId } : {}), root, scratchDir, signal };
    const result = this.unpackInWorker ? await unpackLayerBlobInWorker(blob, options) : await unpackLayerBlob(blob, options);
    // the pipeline verified both; checked here too, so nothing unverified is committed whatever ran it
    if (result.digest !== request.digest) throw digestMismatch(request.digest, result.digest, `layer blob`);
    if (request.diffId !== undefined && result.diffId !== request.diffId) throw digestMismatch(request.diffId, result.diffId, `uncompressed layer ${request.digest} (diff ID)`);
    return { totalBytes: counter.bytes, diffId: result.diffId };
  }

  /** The compressed bytes of the blob (the unpack pipeline verifies them against the digest); resumes after faults. */
  async *#blobBytes(request: LayerDownloadRequest, signal: AbortSignal, counter: { bytes: number }): AsyncGenerator<Uint8Array> {
    const { source, digest } = request;
    let offset = 0;
    if (typeof source !== 'function') {
      const size = source.size;
      if (request.size !== undefined && request.size !== size) {
        throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `blob ${digest} has ${size} bytes, expected ${request.size}`, { digest });
      }
      while (offset < size) {
        const length = Math.min(this.downloadChunkBytes, size - offset);
        const chunk = await this.#withRetries(digest, () => offset, async () => {
          const data = await this.scheduler.run('background', () => source.readRange(offset, length, { signal }), signal);
          if (data.byteLength !== length) {
            throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `short read of ${digest} at ${offset}: ${data.byteLength}/${length}`, { digest, range: { offset, length } });
          }
          return data;
        }, signal);
        offset += chunk.byteLength;
        counter.bytes = offset;
        this.emit('progress', { digest, bytes: offset, totalBytes: size });
        yield chunk;
      }
    } else {
      let attempt = 0;
      for (;;) {
        try {
          for await (const raw of source(offset, { signal })) {
            const chunk = typeof raw === 'string' ? Buffer.from(raw) : (raw as Uint8Array);
            if (this.scheduler.foregroundActive > 0) await this.#yieldToForeground(signal);
            offset += chunk.byteLength;
            counter.bytes = offset;
            attempt = 0;
            this.emit('progress', { digest, bytes: offset, ...(request.size !== undefined ? { totalBytes: request.size } : {}) });
            yield chunk;
          }
          break;
        } catch (err) {
          if (signal.aborted) throw signal.reason;
          if (++attempt > this.fetchRetries) throw wrap(err, digest, offset);
          this.emit('retry', { digest, offset, attempt, error: err });
          await delay(this.retryBaseDelayMs * 2 ** (attempt - 1), signal);
        }
      }
      if (request.size !== undefined && offset !== request.size) {
        throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `blob ${digest} ended after ${offset} bytes, expected ${request.size}`, { digest });
      }
    }
  }

  /** Pauses a streamed download while foreground reads run, for at most 20 ms per chunk (no starvation). */
  async #yieldToForeground(signal: AbortSignal): Promise<void> {
    const local = new AbortController();
    const both = AbortSignal.any([signal, local.signal]);
    try {
      await Promise.race([this.scheduler.whenForegroundIdle(both), delay(20, both)]);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw err;
    } finally {
      local.abort();
    }
  }

  async #withRetries<T>(digest: Digest, offset: () => number, fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        if (attempt >= this.fetchRetries || (isImgstreamError(err) && FATAL.has(err.code))) throw wrap(err, digest, offset());
        this.emit('retry', { digest, offset: offset(), attempt: attempt + 1, error: err });
        await delay(this.retryBaseDelayMs * 2 ** attempt, signal);
      }
    }
  }
}

const FATAL: ReadonlySet<string> = new Set([ErrorCode.REGISTRY_UNAUTHORIZED, ErrorCode.REGISTRY_DENIED, ErrorCode.REGISTRY_NOT_FOUND, ErrorCode.RANGE_NOT_SATISFIABLE]);

function wrap(err: unknown, digest: Digest, offset: number): ImgstreamError {
  if (isImgstreamError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ImgstreamError(ErrorCode.REGISTRY_UNAVAILABLE, `download of ${digest} failed at byte ${offset}: ${message}`, { digest, cause: err });
}

function int(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) throw invalidOption(name, `must be an integer >= ${min}`);
  return value;
}
