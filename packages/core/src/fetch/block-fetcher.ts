import { open, realpath } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { EventEmitter } from 'eventemitter3';
import type { RangeReader } from '../blob.js';
import { ContentCache } from '../cache/content-cache.js';
import type { LayerCache } from '../cache/layer-cache.js';
import { defaults } from '../defaults.js';
import { channel, publish } from '../diagnostics.js';
import type { Digest } from '../digest.js';
import { ErrorCode, ImgstreamError, invalidOption, isImgstreamError } from '../errors.js';
import type { Extent, LayerIndex } from '../index/model.js';
import { delay } from './delay.js';
import { FetchScheduler, type FetchPriority, type FetchTicket } from './fetch-scheduler.js';
import { abortable } from '../abortable.js';
import { BufferPool } from '../buffer-pool.js';
import { PinnedFileRanges } from './pinned-file-ranges.js';

/** A layer as the fetcher reads it: its index and random access to its blob. */
export interface FetchLayer {
  readonly index: LayerIndex;
  readonly reader: RangeReader;
}

/** What to read: a regular file of the layer (a {@link FileEntry} fits), or bare extents with a size. */
export interface ReadTarget {
  /** Size of the file in bytes; reads stop there. */
  readonly size: number;
  /** Where the content lies; bytes outside every extent read as zeros. */
  readonly extents?: readonly Extent[];
  /** The entry's path in the layer; lets completed layers be read from the local layer cache. */
  readonly path?: string;
}

export interface BlockReadOptions {
  signal?: AbortSignal;
  /** Default `'foreground'`. */
  priority?: FetchPriority;
}

/** Options of {@link BlockFetcher}. */
export interface BlockFetcherOptions {
  /** The content cache to use; shared between fetchers if given. Default: a new one of `maxContentCacheBytes`. */
  contentCache?: ContentCache;
  /**
   * Bound of the content cache created when `contentCache` is not given, in bytes. Default
   * `defaults.engine.maxContentCacheBytes` (1 GiB). Warning: all of it may be resident in memory.
   */
  maxContentCacheBytes?: number;
  /** Blocks fetched per round of one read; larger reads take several rounds. Default 2 (GKE `max_read_blocks`). */
  maxReadBlocks?: number;
  /** Bytes of file content fetched ahead of sequential reads. 0 disables read-ahead. Default 1 MiB. */
  readAheadBytes?: number;
  /**
   * On a foreground cache miss, the blocks that follow the missed ones in the layer blob are
   * fetched too, up to this many decoded bytes, at prefetch priority (like Nydus' `amplify_io`):
   * a container's start-up reads files that lie close together in the layer (a package's modules
   * are neighbours in the tar), so the next miss is often already on its way. 0 disables it.
   * Default `defaults.engine.layerReadAheadBytes` (4 MiB). Costs bandwidth for blocks never read.
   */
  layerReadAheadBytes?: number;
  /** Like `layerReadAheadBytes`, for the blocks just before the missed ones. Default `defaults.engine.layerReadBehindBytes` (1 MiB). */
  layerReadBehindBytes?: number;
  /** The request scheduler, shared with the layer downloader so downloads yield to reads. Default: a new one. */
  scheduler?: FetchScheduler;
  /** Range requests at once when `scheduler` is not given. Default 8. */
  maxConcurrentFetches?: number;
  /** Time limit of one range request in milliseconds. Default 30 000. */
  fetchTimeoutMs?: number;
  /** Extra attempts for a failed range request or a block that fails verification. Default 3. */
  fetchRetries?: number;
  /** First retry delay in milliseconds, doubling per attempt. Default 100. */
  retryBaseDelayMs?: number;
  /** When given, reads of layers it holds complete are served from local files. */
  layerCache?: LayerCache;
}

/** One range request finished (successfully or not). */
export interface FetchEvent {
  readonly layerDigest: Digest;
  readonly firstBlock: number;
  readonly blockCount: number;
  /** Offset and length of the range in the blob. */
  readonly offset: number;
  readonly compressedBytes: number;
  /** Decoded bytes (0 when failed). */
  readonly bytes: number;
  readonly latencyMs: number;
  readonly priority: FetchPriority;
  readonly attempt: number;
  readonly error?: ImgstreamError;
}

/** A block was looked up in the content cache. */
export interface CacheLookupEvent {
  readonly layerDigest: Digest;
  readonly block: number;
  readonly hit: boolean;
  readonly priority: FetchPriority;
}

/** One `read()` completed. */
export interface ReadEvent {
  readonly layerDigest: Digest;
  readonly path?: string;
  readonly offset: number;
  readonly bytes: number;
  readonly latencyMs: number;
  readonly priority: FetchPriority;
  /** Served from the local layer cache. */
  readonly local: boolean;
  readonly cacheHits: number;
  readonly cacheMisses: number;
}

export interface BlockFetcherEvents {
  fetch: (event: FetchEvent) => void;
  cache: (event: CacheLookupEvent) => void;
  read: (event: ReadEvent) => void;
}

interface Work {
  readonly controller: AbortController;
  /** The scheduler ticket: a foreground reader joining queued read-ahead raises it. */
  readonly ticket: FetchTicket;
  waiters: number;
  settled: boolean;
  readonly keys: string[];
}

interface Inflight {
  readonly work: Work;
  readonly promise: Promise<Uint8Array>;
}

interface StreamState {
  /** Where a sequential reader reads next. */
  nextOffset: number;
  /** End (file offset) of what read-ahead has requested so far. */
  aheadEnd: number;
}

const MAX_STREAMS = 4096;
/**
 * Read-around requests in flight at once: they share the link with the foreground reads they
 * serve, so a few large ones, not a flood (on a 200 Mbit/s link six at once tripled the latency
 * of the foreground misses).
 */
const MAX_READ_AROUND_REQUESTS = 2;
const MAX_SAFE_PATHS = 16_384;
const fetchChannel = channel('core:fetch');
const readChannel = channel('core:read');

/**
 * Reads file content of streamed layers: maps a file range to blocks through the layer index,
 * serves blocks from the content cache, fetches missing blocks with coalesced range requests
 * (at most `maxReadBlocks` per round), reads ahead on sequential reads, shares in-flight fetches
 * between readers and verifies every block before it is cached or returned.
 */
export class BlockFetcher extends EventEmitter<BlockFetcherEvents> {
  readonly contentCache: ContentCache;
  readonly scheduler: FetchScheduler;
  readonly maxReadBlocks: number;
  readonly readAheadBytes: number;
  readonly layerReadAheadBytes: number;
  readonly layerReadBehindBytes: number;
  readonly fetchTimeoutMs: number;
  readonly fetchRetries: number;
  readonly retryBaseDelayMs: number;
  readonly #layerCache: LayerCache | undefined;
  readonly #inflight = new Map<string, Inflight>();
  readonly #works = new Set<Work>();
  readonly #streams = new Map<string, StreamState>();
  readonly #safeLocalPaths = new Set<string>();
  #closed = false;
  /** Read-around requests in flight. */
  #aroundInflight = 0;
  /** Buffers for range reads, reused: up to 32 MiB kept, reads over 8 MiB get their own. */
  readonly #scratch = new BufferPool(32 * 1024 * 1024, 8 * 1024 * 1024);

  /**
   * File ranges held in memory and served before anything else (a prefetch pack being replayed,
   * docs/prefetch.md): a read that they hold whole is answered from them.
   */
  readonly pinned = new PinnedFileRanges();

  constructor(options: BlockFetcherOptions = {}) {
    super();
    this.contentCache = options.contentCache ?? new ContentCache({ maxBytes: options.maxContentCacheBytes ?? defaults.engine.maxContentCacheBytes });
    this.scheduler = options.scheduler ?? new FetchScheduler({ maxConcurrentFetches: options.maxConcurrentFetches ?? defaults.engine.maxConcurrentFetches });
    this.maxReadBlocks = positiveInt('maxReadBlocks', options.maxReadBlocks ?? defaults.engine.maxReadBlocks);
    this.readAheadBytes = nonNegativeInt('readAheadBytes', options.readAheadBytes ?? defaults.engine.readAheadBytes);
    this.layerReadAheadBytes = nonNegativeInt('layerReadAheadBytes', options.layerReadAheadBytes ?? defaults.engine.layerReadAheadBytes);
    this.layerReadBehindBytes = nonNegativeInt('layerReadBehindBytes', options.layerReadBehindBytes ?? defaults.engine.layerReadBehindBytes);
    this.fetchTimeoutMs = positiveInt('fetchTimeoutMs', options.fetchTimeoutMs ?? defaults.engine.fetchTimeoutMs);
    this.fetchRetries = nonNegativeInt('fetchRetries', options.fetchRetries ?? defaults.engine.fetchRetries);
    this.retryBaseDelayMs = nonNegativeInt('retryBaseDelayMs', options.retryBaseDelayMs ?? defaults.engine.retryBaseDelayMs);
    this.#layerCache = options.layerCache;
    // once a layer is local its blocks are not needed in memory any more
    this.#layerCache?.on('complete', this.#onLayerComplete);
  }

  readonly #onLayerComplete = ({ digest }: { digest: Digest }): void => {
    this.contentCache.deleteLayer(digest);
  };

  /**
   * Reads up to `length` bytes of `file` from `offset` (fewer only at the end of the file).
   * Holes read as zeros. Rejects with `signal.reason` when aborted.
   */
  async read(layer: FetchLayer, file: ReadTarget, offset: number, length: number, options: BlockReadOptions = {}): Promise<Uint8Array> {
    nonNegativeInt('length', length);
    const out = new Uint8Array(Math.max(0, Math.min(file.size, offset + length) - offset));
    const n = await this.readInto(layer, file, offset, out, options);
    return n === out.byteLength ? out : out.subarray(0, n);
  }

  /**
   * A foreground read answered at once from {@link pinned} ranges, when they hold all of
   * `target.byteLength` bytes at `offset` (true), else false and `target` is left alone. Counts
   * as start-up activity, like any foreground read.
   */
  readPinned(layer: FetchLayer, file: ReadTarget, offset: number, target: Uint8Array): boolean {
    if (file.path === undefined || this.pinned.size === 0 || this.#closed || offset + target.byteLength > file.size) return false;
    if (this.pinned.readInto(layer.index.layerDigest, file.path, offset, target) !== true) return false;
    this.scheduler.touch();
    return true;
  }

  /**
   * Like {@link read}, into `target` (up to `target.byteLength` bytes); resolves with the number of
   * bytes written. No allocation per read: a FUSE server passes the kernel's buffer. `target` is
   * not written to once `signal` has aborted, so the caller may give it back right away.
   */
  async readInto(layer: FetchLayer, file: ReadTarget, offset: number, target: Uint8Array, options: BlockReadOptions = {}): Promise<number> {
    this.#checkOpen();
    nonNegativeInt('offset', offset);
    const { signal } = options;
    const priority = options.priority ?? 'foreground';
    signal?.throwIfAborted();
    const started = performance.now();
    const digest = layer.index.layerDigest;
    const end = Math.min(file.size, offset + target.byteLength);
    if (end <= offset) return 0;
    if (file.path !== undefined && this.pinned.size > 0) {
      const view = target.subarray(0, end - offset);
      let pinned = this.pinned.readInto(digest, file.path, offset, view);
      if (pinned instanceof Promise) {
        // its bytes come soon (a pack being replayed): wait rather than fetch them twice
        await abortable(pinned, signal);
        pinned = this.pinned.readInto(digest, file.path, offset, view);
      }
      if (pinned === true) {
        // a start served from a pack is still a start: background downloads wait for its reads to go quiet
        if (priority === 'foreground') this.scheduler.touch();
        return end - offset;
      }
    }

    if (this.#layerCache !== undefined && file.path !== undefined) {
      const release = this.#layerCache.pin(digest);
      if (release !== undefined) {
        try {
          // into a buffer of its own: the pool thread must not write into `target` after an abort
          const local = await readLocal(await this.#localPath(digest, file.path), offset, end - offset, signal);
          signal?.throwIfAborted();
          target.set(local, 0);
          this.#emitRead({ layerDigest: digest, path: file.path, offset, bytes: local.byteLength, latencyMs: performance.now() - started, priority, local: true, cacheHits: 0, cacheMisses: 0 });
          return local.byteLength;
        } finally {
          release();
        }
      }
    }

    const pieces = piecesInRange(file.extents ?? [], offset, end);
    // holes read as zeros
    if (pieces.reduce((n, p) => n + p.length, 0) < end - offset) target.fill(0, 0, end - offset);
    const byBlock = new Map<number, Piece[]>();
    for (const p of pieces) {
      const list = byBlock.get(p.block);
      if (list === undefined) byBlock.set(p.block, [p]);
      else list.push(p);
    }
    const blocks = [...byBlock.keys()];
    const counts = { hits: 0, misses: 0 };
    for (let i = 0; i < blocks.length; i += this.maxReadBlocks) {
      const round = blocks.slice(i, i + this.maxReadBlocks);
      const missesBefore = counts.misses;
      const data = await this.#getBlocks(layer, round, priority, signal, counts);
      signal?.throwIfAborted();
      if (priority === 'foreground' && counts.misses > missesBefore) this.#layerReadAround(layer, round);
      for (const b of round) {
        for (const p of byBlock.get(b)!) {
          const bytes = data.get(p.block)!;
          const src = p.blockOffset;
          if (src + p.length > bytes.byteLength) {
            throw new ImgstreamError(ErrorCode.INVALID_INDEX, `extent runs past the end of block ${p.block}`, { digest });
          }
          target.set(bytes.subarray(src, src + p.length), p.fileOffset - offset);
        }
      }
    }

    if (priority === 'foreground') this.scheduler.touch();
    if (priority !== 'background') this.#readAhead(layer, file, offset, end);
    this.#emitRead({ layerDigest: digest, path: file.path, offset, bytes: end - offset, latencyMs: performance.now() - started, priority, local: false, cacheHits: counts.hits, cacheMisses: counts.misses });
    return end - offset;
  }

  /**
   * The local file of `path` in a complete layer, refusing paths that leave the layer directory
   * (an index that disagrees with the tar, e.g. a file below what the tar made a symlink).
   */
  async #localPath(digest: Digest, path: string): Promise<string> {
    const dir = this.#layerCache!.dirOf(digest);
    const full = join(dir, path);
    const key = `${digest}|${path}`;
    if (this.#safeLocalPaths.has(key)) return full;
    const escapes = path.startsWith('/') || path.split('/').includes('..') || !(await realpath(full)).startsWith(dir + sep);
    if (escapes) {
      throw new ImgstreamError(ErrorCode.UNSAFE_PATH, `${JSON.stringify(path)} resolves outside layer ${digest}`, { digest, path });
    }
    this.#safeLocalPaths.add(key);
    if (this.#safeLocalPaths.size > MAX_SAFE_PATHS) this.#safeLocalPaths.delete(this.#safeLocalPaths.values().next().value!);
    return full;
  }

  /**
   * Makes sure the given blocks are in the content cache (prefetch of a recorded working set).
   * Coalesces adjacent blocks; default priority `'prefetch'`.
   */
  async loadBlocks(layer: FetchLayer, blocks: readonly number[], options: BlockReadOptions = {}): Promise<void> {
    this.#checkOpen();
    const sorted = [...new Set(blocks)].sort((a, b) => a - b);
    const counts = { hits: 0, misses: 0 };
    const round = Math.max(this.maxReadBlocks, 64);
    for (let i = 0; i < sorted.length; i += round) {
      await this.#getBlocks(layer, sorted.slice(i, i + round), options.priority ?? 'prefetch', options.signal, counts);
    }
  }

  /** Range requests in flight (shared works). */
  get inflightFetches(): number {
    return this.#works.size;
  }

  /** Aborts in-flight fetches; later reads throw IMGSTREAM_CLOSED. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#layerCache?.off('complete', this.#onLayerComplete);
    const reason = new ImgstreamError(ErrorCode.CLOSED, 'block fetcher closed');
    for (const w of this.#works) w.controller.abort(reason);
    this.#inflight.clear();
    this.#streams.clear();
  }

  #checkOpen(): void {
    if (this.#closed) throw new ImgstreamError(ErrorCode.CLOSED, 'block fetcher is closed');
  }

  #emitRead(e: ReadEvent): void {
    this.emit('read', e);
    publish(readChannel, e);
  }

  async #getBlocks(
    layer: FetchLayer,
    blocks: readonly number[],
    priority: FetchPriority,
    signal: AbortSignal | undefined,
    counts: { hits: number; misses: number },
  ): Promise<Map<number, Uint8Array>> {
    const digest = layer.index.layerDigest;
    const result = new Map<number, Uint8Array>();
    const joins: Array<Promise<void>> = [];
    const missing: number[] = [];
    for (const b of blocks) {
      if (b < 0 || b >= layer.index.blocks.length) {
        throw new ImgstreamError(ErrorCode.INVALID_INDEX, `extent refers to block ${b}, the layer has ${layer.index.blocks.length}`, { digest });
      }
      const cached = this.contentCache.get(digest, b);
      if (cached !== undefined) {
        counts.hits++;
        this.emit('cache', { layerDigest: digest, block: b, hit: true, priority });
        result.set(b, cached);
        continue;
      }
      counts.misses++;
      this.emit('cache', { layerDigest: digest, block: b, hit: false, priority });
      if (!this.#inflight.has(blockKey(digest, b))) missing.push(b);
    }
    for (const run of coalesce(layer.index, missing)) this.#startWork(layer, run, priority, false);
    for (const b of blocks) {
      if (result.has(b)) continue;
      const inflight = this.#inflight.get(blockKey(digest, b));
      if (inflight === undefined) {
        // finished between the lookup and now: it is in the cache unless evicted already
        const cached = this.contentCache.get(digest, b);
        if (cached !== undefined) {
          result.set(b, cached);
          continue;
        }
        this.#startWork(layer, [b], priority, false);
      }
      const again = this.#inflight.get(blockKey(digest, b))!;
      if (rank(priority) < rank(again.work.ticket.priority)) {
        if (again.work.ticket.raise !== undefined) again.work.ticket.raise(priority);
        else again.work.ticket.priority = priority; // next attempt runs at the raised priority
      }
      joins.push(this.#join(again, signal).then((bytes) => void result.set(b, bytes)));
    }
    const settled = await Promise.allSettled(joins);
    for (const s of settled) if (s.status === 'rejected') throw s.reason;
    return result;
  }

  #join(inflight: Inflight, signal: AbortSignal | undefined): Promise<Uint8Array> {
    const { work } = inflight;
    work.waiters++;
    return abortable(inflight.promise, signal).finally(() => {
      work.waiters--;
      if (work.waiters === 0 && !work.settled) this.#abortWork(work, signal?.reason);
    });
  }

  #abortWork(work: Work, reason: unknown): void {
    for (const k of work.keys) if (this.#inflight.get(k)?.work === work) this.#inflight.delete(k);
    work.controller.abort(reason);
  }

  /** Starts one coalesced range request for `run` (adjacent blocks) and registers it in flight. */
  #startWork(layer: FetchLayer, run: readonly number[], priority: FetchPriority, detached: boolean): Promise<unknown> {
    const digest = layer.index.layerDigest;
    const work: Work = { controller: new AbortController(), ticket: { priority }, waiters: detached ? 1 : 0, settled: false, keys: run.map((b) => blockKey(digest, b)) };
    this.#works.add(work);
    const all = this.#fetchRun(layer, run, work.ticket, work.controller.signal).finally(() => {
      work.settled = true;
      this.#works.delete(work);
      for (const k of work.keys) if (this.#inflight.get(k)?.work === work) this.#inflight.delete(k);
    });
    all.catch(() => {});
    run.forEach((_b, i) => {
      const promise = all.then((decoded) => decoded[i]!);
      promise.catch(() => {});
      this.#inflight.set(work.keys[i]!, { work, promise });
    });
    return all.catch(() => undefined);
  }

  async #fetchRun(layer: FetchLayer, run: readonly number[], ticket: FetchTicket, signal: AbortSignal): Promise<Uint8Array[]> {
    const { index } = layer;
    const first = index.blocks[run[0]!]!;
    const last = index.blocks[run[run.length - 1]!]!;
    const offset = first.compressedOffset;
    const length = last.compressedOffset + last.compressedSize - offset;
    const scratch = this.#scratch.take(length);
    let reusable = true;
    try {
      const decoded = await this.#fetchAttempts(layer, run, ticket, signal, offset, length, scratch);
      // the fetched bytes can be reused unless a block is a view of them (uncompressed formats)
      reusable = !decoded.some((d) => d.buffer === scratch.buffer);
      return decoded;
    } finally {
      // every read of the scratch has settled here (a range read settles only after its last copy)
      if (reusable && !this.#closed) this.#scratch.give(scratch);
    }
  }

  async #fetchAttempts(layer: FetchLayer, run: readonly number[], ticket: FetchTicket, signal: AbortSignal, offset: number, length: number, scratch: Uint8Array): Promise<Uint8Array[]> {
    const { index, reader } = layer;
    let lastError: ImgstreamError | undefined;
    for (let attempt = 0; attempt <= this.fetchRetries; attempt++) {
      if (attempt > 0) await delay(this.retryBaseDelayMs * 2 ** (attempt - 1), signal);
      const started = performance.now();
      try {
        const compressed = await this.scheduler.run(ticket, () => this.#readRange(reader, offset, length, signal, index.layerDigest, scratch), signal);
        if (compressed.byteLength !== length) {
          throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `short read: wanted ${length} bytes at ${offset}, got ${compressed.byteLength}`, {
            digest: index.layerDigest,
            range: { offset, length },
          });
        }
        const decoded: Uint8Array[] = [];
        let bytes = 0;
        for (const b of run) {
          const info = index.blocks[b]!;
          const start = info.compressedOffset - offset;
          const data = await index.decodeBlock(b, compressed.subarray(start, start + info.compressedSize));
          if (data.byteLength !== info.uncompressedSize) {
            throw new ImgstreamError(ErrorCode.CORRUPT_DATA, `block ${b} decoded to ${data.byteLength} bytes, the index says ${info.uncompressedSize}`, { digest: index.layerDigest });
          }
          decoded.push(data);
          bytes += data.byteLength;
        }
        // only verified bytes reach the cache; cache before leaving the in-flight table
        run.forEach((b, i) => this.contentCache.set(index.layerDigest, b, decoded[i]!));
        this.#emitFetch({ layerDigest: index.layerDigest, firstBlock: run[0]!, blockCount: run.length, offset, compressedBytes: length, bytes, latencyMs: performance.now() - started, priority: ticket.priority, attempt });
        return decoded;
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        lastError = toFetchError(err, index.layerDigest, offset, length);
        this.#emitFetch({ layerDigest: index.layerDigest, firstBlock: run[0]!, blockCount: run.length, offset, compressedBytes: length, bytes: 0, latencyMs: performance.now() - started, priority: ticket.priority, attempt, error: lastError });
        if (!retryable(lastError)) throw lastError;
      }
    }
    throw lastError!;
  }

  #emitFetch(e: FetchEvent): void {
    this.emit('fetch', e);
    publish(fetchChannel, e);
  }

  async #readRange(reader: RangeReader, offset: number, length: number, signal: AbortSignal, digest: Digest, buffer: Uint8Array): Promise<Uint8Array> {
    const timeout = AbortSignal.timeout(this.fetchTimeoutMs);
    const both = AbortSignal.any([signal, timeout]);
    try {
      return await reader.readRange(offset, length, { signal: both, buffer });
    } catch (err) {
      if (timeout.aborted && !signal.aborted) {
        throw new ImgstreamError(ErrorCode.TIMEOUT, `range request timed out after ${this.fetchTimeoutMs} ms`, { digest, range: { offset, length }, cause: err });
      }
      throw err;
    }
  }

  /**
   * After a foreground miss: fetches the blocks around the missed ones in the blob (up to
   * `layerReadAheadBytes` after and `layerReadBehindBytes` before) at prefetch priority, in
   * requests of at most `maxReadBlocks` blocks, unless the scheduler is nearly full.
   */
  #layerReadAround(layer: FetchLayer, round: readonly number[]): void {
    const { index } = layer;
    const digest = index.layerDigest;
    if (this.scheduler.running >= this.scheduler.maxConcurrentFetches - 1 || this.#aroundInflight >= MAX_READ_AROUND_REQUESTS || this.pinned.size > 0) return;
    const wanted: number[] = [];
    const take = (from: number, step: 1 | -1, budget: number): void => {
      for (let b = from; budget > 0 && b >= 0 && b < index.blocks.length; b += step) {
        budget -= index.blocks[b]!.uncompressedSize;
        if (!this.contentCache.has(digest, b) && !this.#inflight.has(blockKey(digest, b))) wanted.push(b);
      }
    };
    take(Math.max(...round) + 1, 1, this.layerReadAheadBytes);
    take(Math.min(...round) - 1, -1, this.layerReadBehindBytes);
    for (const run of coalesce(index, wanted)) {
      for (let i = 0; i < run.length; i += this.maxReadBlocks) {
        if (this.#aroundInflight >= MAX_READ_AROUND_REQUESTS) return;
        this.#aroundInflight++;
        this.#startWork(layer, run.slice(i, i + this.maxReadBlocks), 'prefetch', true).finally(() => this.#aroundInflight--);
      }
    }
  }

  /**
   * On sequential reads, fetches the next `readAheadBytes` of the file in the background. Like the
   * kernel's asynchronous read-ahead, a new window is only started once the reader has consumed
   * half of the previous one, so read-ahead requests stay large (up to `readAheadBytes`).
   */
  #readAhead(layer: FetchLayer, file: ReadTarget, offset: number, end: number): void {
    if (this.readAheadBytes === 0 || file.extents === undefined || file.extents.length === 0) return;
    const digest = layer.index.layerDigest;
    const id = `${digest}|${file.path ?? `@${file.extents[0]!.block}:${file.extents[0]!.blockOffset}`}`;
    const state = this.#streams.get(id);
    const sequential = offset === 0 || state?.nextOffset === offset;
    let aheadEnd = sequential && state !== undefined ? state.aheadEnd : end;
    if (state !== undefined) this.#streams.delete(id);
    if (sequential && aheadEnd - end < this.readAheadBytes / 2) {
      const from = Math.max(end, aheadEnd);
      const to = Math.min(file.size, end + this.readAheadBytes);
      if (to > from) {
        const wanted = uniqueBlocks(piecesInRange(file.extents, from, to)).filter(
          (b) => !this.contentCache.has(digest, b) && !this.#inflight.has(blockKey(digest, b)),
        );
        for (const run of coalesce(layer.index, wanted)) this.#startWork(layer, run, 'prefetch', true);
        aheadEnd = to;
      }
    }
    this.#streams.set(id, { nextOffset: end, aheadEnd: Math.max(aheadEnd, end) });
    if (this.#streams.size > MAX_STREAMS) this.#streams.delete(this.#streams.keys().next().value!);
  }
}

function rank(p: FetchPriority): number {
  return p === 'foreground' ? 0 : p === 'prefetch' ? 1 : 2;
}

interface Piece {
  readonly block: number;
  readonly blockOffset: number;
  readonly fileOffset: number;
  readonly length: number;
}

/** The parts of extents that fall in [start, end). */
function piecesInRange(extents: readonly Extent[], start: number, end: number): Piece[] {
  let lo = 0;
  let hi = extents.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = extents[mid]!;
    if (e.fileOffset + e.length <= start) lo = mid + 1;
    else hi = mid;
  }
  const out: Piece[] = [];
  for (let i = lo; i < extents.length; i++) {
    const e = extents[i]!;
    if (e.fileOffset >= end) break;
    const from = Math.max(start, e.fileOffset);
    const to = Math.min(end, e.fileOffset + e.length);
    if (to <= from) continue;
    out.push({ block: e.block, blockOffset: e.blockOffset + (from - e.fileOffset), fileOffset: from, length: to - from });
  }
  return out;
}

function uniqueBlocks(pieces: readonly Piece[]): number[] {
  const seen = new Set<number>();
  for (const p of pieces) seen.add(p.block);
  return [...seen];
}

/**
 * Groups consecutive blocks into runs whose compressed ranges are adjacent or overlap in the blob
 * (zran spans that start mid-byte share that byte with the previous span).
 */
function coalesce(index: LayerIndex, blocks: readonly number[]): number[][] {
  const sorted = [...blocks].sort((a, b) => a - b);
  const runs: number[][] = [];
  let cur: number[] = [];
  for (const b of sorted) {
    const prev = cur[cur.length - 1];
    if (prev !== undefined) {
      const p = index.blocks[prev]!;
      const n = index.blocks[b]!;
      if (b !== prev + 1 || n.compressedOffset < p.compressedOffset || n.compressedOffset > p.compressedOffset + p.compressedSize) {
        runs.push(cur);
        cur = [];
      }
    }
    cur.push(b);
  }
  if (cur.length > 0) runs.push(cur);
  return runs;
}

function blockKey(digest: Digest, block: number): string {
  return `${digest}#${block}`;
}


async function readLocal(path: string, offset: number, length: number, signal: AbortSignal | undefined): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      signal?.throwIfAborted();
      const { bytesRead } = await fh.read(out, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done === length ? out : out.subarray(0, done);
  } finally {
    await fh.close();
  }
}

const NOT_RETRYABLE: ReadonlySet<string> = new Set([
  ErrorCode.REGISTRY_UNAUTHORIZED,
  ErrorCode.REGISTRY_DENIED,
  ErrorCode.REGISTRY_NOT_FOUND,
  ErrorCode.RANGE_NOT_SATISFIABLE,
  ErrorCode.INVALID_OPTION,
  ErrorCode.INVALID_INDEX,
  ErrorCode.CLOSED,
]);

function retryable(err: ImgstreamError): boolean {
  return !NOT_RETRYABLE.has(err.code);
}

function toFetchError(err: unknown, digest: Digest, offset: number, length: number): ImgstreamError {
  if (isImgstreamError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ImgstreamError(ErrorCode.REGISTRY_UNAVAILABLE, `range request failed: ${message}`, { digest, range: { offset, length }, cause: err });
}

function positiveInt(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw invalidOption(name, 'must be a positive integer');
  return value;
}

function nonNegativeInt(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) throw invalidOption(name, 'must be a non-negative integer');
  return value;
}
