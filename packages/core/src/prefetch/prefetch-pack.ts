import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { isDigest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { PinnedFileRanges, PinnedRange } from '../fetch/pinned-file-ranges.js';
import type { RangeReader } from '../blob.js';
import type { BlockFetcher, FetchLayer } from '../fetch/block-fetcher.js';
import type { LayerIndex } from '../index/model.js';
import { abortable } from '../abortable.js';

/** A file range of a report (`PrefetchReport.files`): `layer` is the position in its `layers`. */
export interface PackFileRange {
  readonly layer: number;
  readonly path: string;
  readonly offset: number;
  readonly length: number;
}

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/** Media type of a prefetch pack blob (a layer of the prefetch artifact, docs/prefetch.md). */
export const PREFETCH_PACK_MEDIA_TYPE = 'application/vnd.imgstream.prefetch-pack.v1.gzip';
/** Most decoded bytes a pack may hold. */
export const MAX_PREFETCH_PACK_BYTES = 1024 * 1024 * 1024;
/** Most members a pack may have. */
export const MAX_PREFETCH_PACK_MEMBERS = 65_536;

/** One gzip member of a pack: whole file ranges of the report, in report order. */
export interface PrefetchPackMember {
  /** Bytes of the member in the pack blob. */
  readonly compressedSize: number;
  /** Bytes it decodes to: the lengths of the file ranges it holds. */
  readonly decodedSize: number;
  /** sha256 of its compressed bytes: checked before any of its bytes are served. */
  readonly digest: Digest;
}

/**
 * The pack of a report: the bytes of its file ranges (`files`), in report order, as consecutive
 * gzip members; each member holds whole ranges. What a replay fetches instead of the blocks: the
 * ranges alone, compressed file by file, instead of the whole spans they lie in.
 */
export interface PrefetchPackDescriptor extends PackLayout {
  /** Digest of the whole pack blob. */
  readonly digest: Digest;
  readonly size: number;
  readonly members: readonly PrefetchPackMember[];
}

/**
 * How a report's file ranges become a pack's ({@link packRangesOf}): starts and ends rounded to
 * `align` bytes, ends moved `extend` bytes further (within the file), so the kernel's read-ahead
 * around a range finds its bytes in the pack too; ranges of a file that then overlap or touch are
 * joined, and cut into pieces of at most `piece` bytes, so a large file arrives (and is decoded)
 * piece by piece instead of all at once.
 */
export interface PackLayout {
  readonly align: number;
  readonly extend: number;
  readonly piece: number;
}

/** The layout of the packs this code builds: 128 KiB alignment (the largest FUSE read), 1 MiB extension, 1 MiB pieces. */
export const PREFETCH_PACK_LAYOUT: PackLayout = Object.freeze({ align: 128 * 1024, extend: 1024 * 1024, piece: 1024 * 1024 });

/**
 * The ranges a pack holds, from a report's file ranges ({@link PackLayout}), in the order their
 * first part was read. `sizeOf` gives a file's size (undefined: the index has no such file; its
 * ranges are left out). Both the node that builds a pack and the one that replays it compute them
 * (same index, same layout).
 */
export function packRangesOf(files: readonly PackFileRange[], sizeOf: (layer: number, path: string) => number | undefined, layout: PackLayout): PackFileRange[] {
  const { align, extend, piece } = layout;
  type Interval = { layer: number; path: string; start: number; end: number; order: number };
  const byFile = new Map<string, Interval[]>();
  files.forEach((f, order) => {
    const size = sizeOf(f.layer, f.path);
    if (size === undefined) return;
    const start = Math.floor(f.offset / align) * align;
    const end = Math.min(size, Math.ceil((f.offset + f.length) / align) * align + extend);
    if (end <= start) return;
    const key = `${f.layer}\0${f.path}`;
    const list = byFile.get(key) ?? [];
    byFile.set(key, list);
    list.push({ layer: f.layer, path: f.path, start, end, order });
  });
  const joined: Interval[] = [];
  for (const list of byFile.values()) {
    list.sort((a, b) => a.start - b.start);
    let cur: Interval | undefined;
    for (const x of list) {
      if (cur !== undefined && x.start <= cur.end) {
        cur.end = Math.max(cur.end, x.end);
        cur.order = Math.min(cur.order, x.order);
      } else {
        cur = { ...x };
        joined.push(cur);
      }
    }
  }
  joined.sort((a, b) => a.order - b.order || a.start - b.start);
  const out: PackFileRange[] = [];
  for (const x of joined) {
    for (let at = x.start; at < x.end; at += piece) out.push({ layer: x.layer, path: x.path, offset: at, length: Math.min(piece, x.end - at) });
  }
  return out;
}

/**
 * The pack of a recorded report (its `files`, laid out by `layout`): the ranges read through
 * `fetcher` from `layers` (usually still in its cache after the recording, else fetched at
 * background priority), compressed. Undefined when the report has no file ranges. The caller
 * stores or pushes `bytes` beside the report with `pack: descriptor` (docs/prefetch.md).
 */
export async function packPrefetchReport(
  report: { readonly layers: ReadonlyArray<{ readonly digest: Digest }>; readonly files?: readonly PackFileRange[] | undefined },
  layers: ReadonlyMap<Digest, FetchLayer>,
  fetcher: BlockFetcher,
  options: BuildPrefetchPackOptions & { layout?: PackLayout } = {},
): Promise<{ descriptor: PrefetchPackDescriptor; bytes: Uint8Array } | undefined> {
  if (report.files === undefined || report.files.length === 0) return undefined;
  const layout = options.layout ?? PREFETCH_PACK_LAYOUT;
  const read = async (f: PackFileRange): Promise<Uint8Array> => {
    const layer = layers.get(report.layers[f.layer]!.digest)!;
    const entry = layer.index.entries.get(f.path)!;
    return fetcher.read(layer, entry, f.offset, f.length, { priority: 'background', ...(options.signal !== undefined ? { signal: options.signal } : {}) });
  };
  return buildPrefetchPack(reportPackRanges(report, (d) => layers.get(d)?.index, layout), read, layout, options);
}

/**
 * {@link packRangesOf} for a report against the image's indexes (`indexOf` a layer digest): the
 * sizes are those of the regular files of the report's layers.
 */
export function reportPackRanges(
  report: { readonly layers: ReadonlyArray<{ readonly digest: Digest }>; readonly files?: readonly PackFileRange[] | undefined },
  indexOf: (layerDigest: Digest) => LayerIndex | undefined,
  layout: PackLayout,
): PackFileRange[] {
  return packRangesOf(report.files ?? [], (layer, path) => {
    const digest = report.layers[layer]?.digest;
    const entry = digest !== undefined ? indexOf(digest)?.entries.get(path) : undefined;
    return entry?.type === 'file' ? entry.size : undefined;
  }, layout);
}

/** Options of {@link buildPrefetchPack}. */
export interface BuildPrefetchPackOptions {
  /** Decoded bytes per member (whole ranges: a range larger than this is a member of its own). Default 2 MiB. */
  memberBytes?: number;
  /** Decoded bytes of the first member, so the first ranges are served early. Default 512 KiB. */
  firstMemberBytes?: number;
  signal?: AbortSignal;
}

/**
 * Builds a pack of `files` (the pack's ranges, {@link packRangesOf}): reads each range with `read`
 * (in order) and compresses them into gzip members. Resolves with the descriptor and the blob.
 */
export async function buildPrefetchPack(
  files: readonly PackFileRange[],
  read: (range: PackFileRange) => Promise<Uint8Array>,
  layout: PackLayout,
  options: BuildPrefetchPackOptions = {},
): Promise<{ descriptor: PrefetchPackDescriptor; bytes: Uint8Array }> {
  const memberBytes = options.memberBytes ?? 2 * 1024 * 1024;
  const firstBytes = options.firstMemberBytes ?? 512 * 1024;
  const members: PrefetchPackMember[] = [];
  const blobs: Uint8Array[] = [];
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let total = 0;
  const flush = async (): Promise<void> => {
    if (pending.length === 0) return;
    const z = new Uint8Array(await gzipAsync(Buffer.concat(pending)));
    members.push({ compressedSize: z.byteLength, decodedSize: pendingBytes, digest: sha256(z) });
    blobs.push(z);
    pending = [];
    pendingBytes = 0;
  };
  for (const f of files) {
    options.signal?.throwIfAborted();
    const bytes = await read(f);
    if (bytes.byteLength !== f.length) throw new ImgstreamError(ErrorCode.CORRUPT_DATA, `prefetch pack: read ${bytes.byteLength} bytes of ${f.path}, wanted ${f.length}`);
    total += f.length;
    if (total > MAX_PREFETCH_PACK_BYTES) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `prefetch pack: more than ${MAX_PREFETCH_PACK_BYTES} bytes of file ranges`, { limit: MAX_PREFETCH_PACK_BYTES });
    if (pendingBytes > 0 && pendingBytes + f.length > (members.length === 0 ? firstBytes : memberBytes)) await flush();
    pending.push(bytes);
    pendingBytes += f.length;
  }
  await flush();
  const bytes = new Uint8Array(Buffer.concat(blobs));
  return { descriptor: { digest: sha256(bytes), size: bytes.byteLength, align: layout.align, extend: layout.extend, piece: layout.piece, members }, bytes };
}

function sha256(bytes: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
}

/**
 * Checks a descriptor against the report's file ranges: sizes add up, each member ends at the end
 * of a range. Returns the number of ranges in each member. Throws a plain message on failure.
 */
export function packMemberRanges(descriptor: PrefetchPackDescriptor, files: readonly PackFileRange[]): number[] {
  if (!isDigest(descriptor.digest)) throw new Error('bad pack digest');
  if (descriptor.members.length === 0 || descriptor.members.length > MAX_PREFETCH_PACK_MEMBERS) throw new Error('bad number of pack members');
  let compressed = 0;
  let next = 0;
  const counts: number[] = [];
  for (const [i, m] of descriptor.members.entries()) {
    if (!isDigest(m.digest) || !(m.compressedSize > 0) || !(m.decodedSize > 0)) throw new Error(`pack member ${i} malformed`);
    compressed += m.compressedSize;
    let decoded = 0;
    const first = next;
    while (decoded < m.decodedSize && next < files.length) decoded += files[next++]!.length;
    if (decoded !== m.decodedSize) throw new Error(`pack member ${i} does not end at the end of a file range`);
    counts.push(next - first);
  }
  if (next !== files.length) throw new Error('the pack does not hold every file range');
  if (compressed !== descriptor.size) throw new Error('pack members do not add up to the pack size');
  return counts;
}

/** What a pack replay did. */
export interface PrefetchPackResult {
  /** File ranges pinned. */
  readonly ranges: number;
  /** Decoded bytes pinned. */
  readonly bytes: number;
  /** Compressed bytes read. */
  readonly packBytes: number;
  /** Why it stopped before the end (a member failed its digest, the source failed); the rest is read through the fetcher. */
  readonly error?: ImgstreamError;
  /** The ranges that were not pinned (with `error`), in pack order. */
  readonly missing: readonly PackFileRange[];
  readonly durationMs: number;
}

/** How {@link replayPrefetchPack} reads a pack. */
export interface PackReplayOptions {
  /** Range requests in flight at once, after the first (which goes alone). Default 4. */
  parallel?: number;
  /** Most compressed bytes of one range request (whole members; a larger member is one of its own). Default 4 MiB. */
  requestBytes?: number;
  signal?: AbortSignal;
}

/**
 * Reads a pack with range requests of whole members from `reader` (its blob): the first alone and
 * small, so what a start reads first arrives first, then up to `parallel` at once, each up to
 * `requestBytes`. Checks each member's digest, decodes it and pins its file ranges, calling
 * `onPinned` per member with the ranges. Every range is announced at the start; a reader of one
 * whose member is in flight (or among the next few) waits for it rather than fetching its blocks.
 * After a member or request fails, no further request is made; members that arrived and check out
 * are pinned all the same, the other ranges are removed (their readers read through the fetcher).
 * Never rejects: the first failure is the result's `error`.
 */
export async function replayPrefetchPack(
  descriptor: PrefetchPackDescriptor,
  files: readonly PackFileRange[],
  layerDigests: readonly Digest[],
  reader: RangeReader,
  pinned: PinnedFileRanges,
  onAnnounced: (handles: readonly PinnedRange[]) => void,
  onPinned: (ranges: readonly PackFileRange[]) => void,
  options: PackReplayOptions = {},
): Promise<PrefetchPackResult> {
  const started = performance.now();
  const parallel = Math.max(1, options.parallel ?? 4);
  const requestBytes = Math.max(1, options.requestBytes ?? DEFAULT_REQUEST_BYTES);
  const { signal } = options;
  const counts = packMemberRanges(descriptor, files);
  const members = descriptor.members;
  // where each member starts: in the blob, and in files
  const at: number[] = [];
  const firstRange: number[] = [];
  for (let m = 0, offset = 0, range = 0; m < members.length; m++) {
    at.push(offset);
    firstRange.push(range);
    offset += members[m]!.compressedSize;
    range += counts[m]!;
  }
  const requests = packRequests(descriptor, requestBytes);
  // members up to here have been asked for: a reader of one of their ranges (or of the next few) waits
  let asked = 0;
  const handles: PinnedRange[] = [];
  counts.forEach((count, m) => {
    for (let i = 0; i < count; i++) {
      const f = files[handles.length]!;
      handles.push(pinned.expect(layerDigests[f.layer]!, f.path, f.offset, f.length, () => m < asked + SOON_MEMBERS));
    }
  });
  onAnnounced(handles);
  let ranges = 0;
  let bytes = 0;
  let packBytes = 0;
  let failure: ImgstreamError | undefined;
  const filled = new Uint8Array(members.length);
  const decode = async (m: number, compressed: Uint8Array): Promise<void> => {
    const member = members[m]!;
    if (sha256(compressed) !== member.digest) throw new ImgstreamError(ErrorCode.DIGEST_MISMATCH, `prefetch pack member ${m}: digest mismatch`, { expected: member.digest });
    // one output chunk of the whole member: one thread-pool round, no copies (zlib's default is 16 KiB chunks)
    const decoded = await gunzipAsync(compressed, { chunkSize: Math.max(64 * 1024, member.decodedSize + 1) });
    const out = new Uint8Array(decoded.buffer, decoded.byteOffset, decoded.byteLength);
    if (out.byteLength !== member.decodedSize) throw new ImgstreamError(ErrorCode.CORRUPT_DATA, `prefetch pack member ${m}: ${out.byteLength} bytes, the report says ${member.decodedSize}`);
    const done: PackFileRange[] = [];
    for (let i = firstRange[m]!, o = 0; i < firstRange[m]! + counts[m]!; i++) {
      const f = files[i]!;
      pinned.fill(handles[i]!, out.subarray(o, o + f.length));
      o += f.length;
      done.push(f);
    }
    filled[m] = 1;
    ranges += counts[m]!;
    bytes += out.byteLength;
    onPinned(done);
  };
  // decodes run beside the requests: a lane asks for its next range as soon as one arrived
  const decodes: Array<Promise<void>> = [];
  const run = async (r: PackRequest): Promise<void> => {
    const { offset, length } = r;
    const data = await reader.readRange(offset, length, signal !== undefined ? { signal } : {});
    if (data.byteLength !== length) throw new ImgstreamError(ErrorCode.CORRUPT_DATA, `prefetch pack: ${data.byteLength} bytes at ${offset}, wanted ${length}`);
    packBytes += length;
    // each member on its own: one that fails loses its own ranges only
    for (let m = r.first; m < r.end; m++) {
      decodes.push(
        decode(m, data.subarray(at[m]! - offset, at[m]! - offset + members[m]!.compressedSize)).catch((err: unknown) => {
          failure ??= toPackError(err);
        }),
      );
    }
  };
  const take = async (r: PackRequest): Promise<void> => {
    asked = Math.max(asked, r.end);
    try {
      signal?.throwIfAborted();
      await run(r);
    } catch (err) {
      failure ??= signal?.aborted === true ? new ImgstreamError(ErrorCode.CLOSED, 'prefetch pack: the replay was stopped', { cause: err }) : toPackError(err);
    }
  };
  // the first request alone: its ranges are what the start reads first
  if (requests.length > 0) await take(requests[0]!);
  let next = 1;
  const lane = async (): Promise<void> => {
    while (failure === undefined && next < requests.length) await take(requests[next++]!);
  };
  await Promise.all(Array.from({ length: parallel }, lane));
  await Promise.all(decodes);
  // ranges that will not come any more: their readers read elsewhere
  const lost = failure === undefined ? [] : members.flatMap((_, m) => (filled[m] === 1 ? [] : range(firstRange[m]!, firstRange[m]! + counts[m]!)));
  pinned.remove(lost.map((i) => handles[i]!));
  return { ranges, bytes, packBytes, ...(failure !== undefined ? { error: failure } : {}), missing: lost.map((i) => files[i]!), durationMs: performance.now() - started };
}

/** One range request of a pack replay: members `first` to `end` (exclusive), `length` bytes at `offset` of the blob. */
export interface PackRequest {
  readonly first: number;
  readonly end: number;
  readonly offset: number;
  readonly length: number;
}

/**
 * The range requests a replay makes of a pack, in order: runs of whole members, the first up to
 * 512 KiB (what a start reads first arrives first), then growing to `requestBytes` (a larger
 * member is a request of its own). They depend on the descriptor only.
 */
export function packRequests(descriptor: PrefetchPackDescriptor, requestBytes = DEFAULT_REQUEST_BYTES): PackRequest[] {
  const members = descriptor.members;
  const requests: PackRequest[] = [];
  for (let m = 0, offset = 0, limit = FIRST_REQUEST_BYTES; m < members.length; ) {
    const first = m;
    let bytes = members[m++]!.compressedSize;
    while (m < members.length && bytes + members[m]!.compressedSize <= limit) bytes += members[m++]!.compressedSize;
    requests.push({ first, end: m, offset, length: bytes });
    offset += bytes;
    limit = Math.min(requestBytes, Math.max(limit * 2, bytes * 2));
  }
  return requests;
}

/**
 * A pack blob read ahead of its replay. A replay needs the image's layer indexes (to place the
 * pack's ranges in files); the pack does not: this starts the replay's own range requests
 * ({@link packRequests}: the first alone, then `parallel` at once) as soon as the report is known,
 * so the pack crosses the link while the indexes are fetched and parsed. A read of exactly one
 * of those requests is answered from it (once); any other read goes to `reader`. After a request
 * fails no further one starts. `close()` aborts what is in flight and closes `reader`.
 */
export class PackReadAhead implements RangeReader {
  readonly size: number;
  readonly #reader: RangeReader & { close?: () => Promise<void> };
  readonly #ahead = new Map<number, { length: number; data: Promise<Uint8Array> }>();
  readonly #controller = new AbortController();

  constructor(descriptor: PrefetchPackDescriptor, reader: RangeReader & { close?: () => Promise<void> }, options: { parallel?: number; requestBytes?: number; signal?: AbortSignal } = {}) {
    this.size = reader.size;
    this.#reader = reader;
    if (options.signal?.aborted === true) this.#controller.abort(options.signal.reason);
    else options.signal?.addEventListener('abort', () => this.#controller.abort(options.signal?.reason), { once: true });
    const signal = this.#controller.signal;
    const requests = packRequests(descriptor, options.requestBytes);
    // a request's bytes, and the function that starts it (or fails it without asking: `skip`)
    const starts = requests.map((r) => {
      let start!: (skip?: Error) => Promise<void>;
      const data = new Promise<Uint8Array>((resolve, reject) => {
        start = (skip) => {
          const read = skip !== undefined ? Promise.reject(skip) : signal.aborted ? Promise.reject(signal.reason as Error) : reader.readRange(r.offset, r.length, { signal });
          read.then(resolve, reject);
          return read.then(() => undefined);
        };
      });
      data.catch(() => undefined); // a request nobody reads any more is not an unhandled rejection
      this.#ahead.set(r.offset, { length: r.length, data });
      return start;
    });
    // like the replay: the first alone, then `parallel` lanes; after a failure no new request
    // starts (those in flight finish), and the rest fail unasked
    let failed: unknown;
    let next = 1;
    const take = (i: number): Promise<void> => starts[i]!().catch((err: unknown) => void (failed ??= err));
    const lane = async (): Promise<void> => {
      while (failed === undefined && next < starts.length) await take(next++);
    };
    const parallel = Math.max(1, options.parallel ?? 4);
    void (async () => {
      if (starts.length > 0) await take(0);
      await Promise.all(Array.from({ length: parallel }, lane));
      const skipped = new ImgstreamError(ErrorCode.CLOSED, 'prefetch pack: not read ahead after an earlier request failed', { cause: failed });
      while (next < starts.length) starts[next++]!(skipped).catch(() => undefined);
    })();
  }

  readRange(offset: number, length: number, options: { signal?: AbortSignal; buffer?: Uint8Array } = {}): Promise<Uint8Array> {
    const ahead = this.#ahead.get(offset);
    if (ahead === undefined || ahead.length !== length) return this.#reader.readRange(offset, length, options);
    this.#ahead.delete(offset);
    return abortable(ahead.data, options.signal);
  }

  async close(): Promise<void> {
    this.#controller.abort(new ImgstreamError(ErrorCode.CLOSED, 'prefetch pack read-ahead closed'));
    this.#ahead.clear();
    await this.#reader.close?.();
  }
}

/**
 * Which parts of a pack's pinned pieces a page-cache warm-up reads: each joined range (adjacent
 * pieces of a file) but its last `extend` bytes, the read-ahead extension, unless it ends at the
 * end of the file (`sizeOf`). Reading a range to its end sets the kernel reading ahead past it (by
 * the mount's read-ahead, 128 KiB), past the pack: on node-app those reads fetched spans from
 * the registry while the container started. The container's own reads still find the extension
 * pinned. Returns the filter for the pieces of one layer as they are pinned.
 */
export function packWarmupPieces(
  ranges: readonly PackFileRange[],
  layerDigests: readonly Digest[],
  extend: number,
  sizeOf: (layerDigest: Digest, path: string) => number | undefined,
): (layerDigest: Digest, pieces: ReadonlyArray<{ path: string; offset: number; length: number }>) => Array<{ path: string; offset: number; length: number }> {
  // layer\0path -> the joined ranges of the file: [start, warm end)
  const joined = new Map<string, Array<{ start: number; warmEnd: number }>>();
  let start = 0;
  ranges.forEach((f, i) => {
    const prev = ranges[i - 1];
    if (prev === undefined || prev.layer !== f.layer || prev.path !== f.path || prev.offset + prev.length !== f.offset) start = f.offset;
    const next = ranges[i + 1];
    if (next !== undefined && next.layer === f.layer && next.path === f.path && next.offset === f.offset + f.length) return;
    const layer = layerDigests[f.layer]!;
    const end = f.offset + f.length;
    const key = `${layer}\0${f.path}`;
    const list = joined.get(key) ?? [];
    list.push({ start, warmEnd: end === sizeOf(layer, f.path) ? end : Math.max(start, end - extend) });
    joined.set(key, list);
  });
  return (layerDigest, pieces) => {
    const out: Array<{ path: string; offset: number; length: number }> = [];
    for (const p of pieces) {
      const r = joined.get(`${layerDigest}\0${p.path}`)?.find((x) => p.offset >= x.start && p.offset < x.warmEnd);
      const length = r === undefined ? 0 : Math.min(p.offset + p.length, r.warmEnd) - p.offset;
      if (length > 0) out.push({ path: p.path, offset: p.offset, length });
    }
    return out;
  };
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/** Compressed bytes of a replay's first range request (whole members; at least one). */
const FIRST_REQUEST_BYTES = 512 * 1024;

/** Most compressed bytes of a replay's later range requests. */
const DEFAULT_REQUEST_BYTES = 4 * 1024 * 1024;

/** Members after the last decoded one whose ranges a reader waits for (instead of reading them elsewhere). */
const SOON_MEMBERS = 4;

function toPackError(err: unknown): ImgstreamError {
  if (err instanceof ImgstreamError) return err;
  return new ImgstreamError(ErrorCode.CORRUPT_DATA, `prefetch pack: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
