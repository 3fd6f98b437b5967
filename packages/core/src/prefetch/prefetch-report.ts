import { createHash } from 'node:crypto';
import { isDigest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { LayerFormat, LayerIndex } from '../index/model.js';
import type { PrefetchPackDescriptor } from './prefetch-pack.js';

/** Media type of a serialised prefetch report (docs/prefetch.md). */
export const PREFETCH_REPORT_MEDIA_TYPE = 'application/vnd.imgstream.prefetch-report.v1+json';
/** Artifact type of the registry artifact carrying a prefetch report. */
export const PREFETCH_ARTIFACT_TYPE = 'application/vnd.imgstream.prefetch.v1';
/** The report version this code writes and reads. */
export const PREFETCH_REPORT_VERSION = 1;
/** Largest serialised report accepted, bytes. */
export const MAX_PREFETCH_REPORT_BYTES = 4 * 1024 * 1024;

/** One layer a report refers to, with the identity of the index its block numbers belong to. */
export interface PrefetchReportLayer {
  readonly digest: Digest;
  readonly format: LayerFormat;
  /** {@link layerIndexIdentity} of the index the block numbers refer to. */
  readonly indexId: string;
  /** Number of blocks of that index. */
  readonly blocks: number;
}

/** A run of blocks of one layer: `count` blocks from `first`. */
export interface PrefetchRange {
  /** Position of the layer in {@link PrefetchReport.layers}. */
  readonly layer: number;
  readonly first: number;
  readonly count: number;
}

/**
 * A byte range of one file that the start-up read: what a page-cache warm-up reads (docs/prefetch.md).
 * Adjacent and overlapping reads of a file are joined.
 */
export interface PrefetchFileRange {
  /** Position of the layer in {@link PrefetchReport.layers}. */
  readonly layer: number;
  /** The file's path in the layer (as in the layer index). */
  readonly path: string;
  readonly offset: number;
  readonly length: number;
}

/**
 * A path the start-up looked up in a layer and did not find (module resolution, a search of
 * `PATH`): a replay looks it up through a mount that caches negative entries, so the container's
 * own lookup of it is answered by the kernel (docs/prefetch.md).
 */
export interface PrefetchAbsentPath {
  /** Position of the layer in {@link PrefetchReport.layers}. */
  readonly layer: number;
  /** The path in the layer. */
  readonly path: string;
}

/** Most absent paths a report carries (also at most about 1 MiB of them serialised); a start-up that looked up more keeps its first ones. */
export const MAX_PREFETCH_ABSENT_PATHS = 20_000;
const MAX_ABSENT_JSON_BYTES = 1024 * 1024;

/**
 * A path the start-up looked up in a layer, found, and did not read (a stat: Python checks each
 * module's source beside the bytecode it loads; a program looks for its configuration): a replay
 * looks it up ahead, so the kernel has the entry when the container's own lookup comes
 * (docs/prefetch.md).
 */
export type PrefetchLookedPath = PrefetchAbsentPath;

/** Most looked-up paths a report carries (also at most about 512 KiB of them serialised); a start-up that looked up more keeps its first ones. */
export const MAX_PREFETCH_LOOKED_PATHS = 10_000;
const MAX_LOOKED_JSON_BYTES = 512 * 1024;

/**
 * Most file ranges a report carries; a start-up that read more keeps its first ones (also at most
 * about 2 MiB of them serialised, so the report stays under {@link MAX_PREFETCH_REPORT_BYTES}).
 */
export const MAX_PREFETCH_FILE_RANGES = 20_000;
const MAX_FILE_RANGE_JSON_BYTES = 2 * 1024 * 1024;

/** The start-up working set of one image: which blocks of which layers were read, in first-read order. */
export interface PrefetchReport {
  readonly version: number;
  /** The platform manifest the report was recorded for. */
  readonly manifestDigest: Digest;
  /** When it was recorded, ISO 8601. */
  readonly createdAt: string;
  readonly layers: readonly PrefetchReportLayer[];
  /** Block runs in the order they were first read; no block appears twice. */
  readonly ranges: readonly PrefetchRange[];
  /** Optional: the file ranges read, in first-read order (reports recorded before it existed have none). */
  readonly files?: readonly PrefetchFileRange[];
  /** Optional: the paths looked up in vain, in first-lookup order, no repeats (reports recorded before it existed have none). */
  readonly absent?: readonly PrefetchAbsentPath[];
  /** Optional: the paths looked up and found but not read (no path of `files`), in first-lookup order, no repeats. */
  readonly looked?: readonly PrefetchLookedPath[];
  /**
   * Optional: the pack of `files` (their bytes, compressed range by range), a second blob beside
   * the report; a replay that can read it fetches it instead of the blocks (docs/prefetch.md).
   */
  readonly pack?: PrefetchPackDescriptor;
}

const identities = new WeakMap<LayerIndex, string>();

/**
 * The identity of a layer index: `sha256:` over its format and block map. Block numbers in a
 * report are only meaningful against an index with the same identity.
 */
export function layerIndexIdentity(index: LayerIndex): string {
  let id = identities.get(index);
  if (id === undefined) {
    const h = createHash('sha256');
    h.update(`${index.format}\n${index.layerDigest}\n${index.blocks.length}\n`);
    for (const b of index.blocks) h.update(`${b.compressedOffset},${b.compressedSize},${b.uncompressedSize}\n`);
    id = `sha256:${h.digest('hex')}`;
    identities.set(index, id);
  }
  return id;
}

/** Describes a layer index for a report. */
export function reportLayerOf(index: LayerIndex): PrefetchReportLayer {
  return { digest: index.layerDigest, format: index.format, indexId: layerIndexIdentity(index), blocks: index.blocks.length };
}

/**
 * Builds a report from block reads in order: keeps the first read of each block and joins reads
 * of consecutive blocks of one layer into runs.
 */
export function buildPrefetchReport(
  manifestDigest: Digest,
  layers: readonly PrefetchReportLayer[],
  reads: Iterable<{ readonly layer: Digest; readonly block: number }>,
  createdAt: Date = new Date(),
  fileReads?: Iterable<{ readonly layer: Digest; readonly path: string; readonly offset: number; readonly length: number }>,
  absentLookups?: Iterable<{ readonly layer: Digest; readonly path: string }>,
  lookups?: Iterable<{ readonly layer: Digest; readonly path: string }>,
): PrefetchReport {
  const pos = new Map<Digest, number>(layers.map((l, i) => [l.digest, i]));
  const seen = new Set<string>();
  const ranges: Array<{ layer: number; first: number; count: number }> = [];
  for (const r of reads) {
    const layer = pos.get(r.layer);
    if (layer === undefined) continue;
    const key = `${layer}:${r.block}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const last = ranges[ranges.length - 1];
    if (last !== undefined && last.layer === layer && last.first + last.count === r.block) last.count++;
    else ranges.push({ layer, first: r.block, count: 1 });
  }
  const report: PrefetchReport = { version: PREFETCH_REPORT_VERSION, manifestDigest, createdAt: createdAt.toISOString(), layers: [...layers], ranges };
  const files = fileReads === undefined ? undefined : joinFileReads(pos, fileReads);
  const absent = absentLookups === undefined ? undefined : firstLookups(pos, absentLookups, MAX_PREFETCH_ABSENT_PATHS, MAX_ABSENT_JSON_BYTES);
  // a path the start read is warmed by its reads: only the others are worth a lookup ahead
  const read = new Set((files ?? []).map((f) => `${f.layer}\0${f.path}`));
  const looked = lookups === undefined ? undefined : firstLookups(pos, lookups, MAX_PREFETCH_LOOKED_PATHS, MAX_LOOKED_JSON_BYTES, read);
  return {
    ...report,
    ...(files !== undefined ? { files } : {}),
    ...(absent !== undefined && absent.length > 0 ? { absent } : {}),
    ...(looked !== undefined && looked.length > 0 ? { looked } : {}),
  };
}

/** Lookups in order -> the first lookup of each (but `skip`'s `layer\0path` keys), within `max` paths and about `maxJsonBytes`. */
function firstLookups(
  pos: ReadonlyMap<Digest, number>,
  lookups: Iterable<{ readonly layer: Digest; readonly path: string }>,
  max: number,
  maxJsonBytes: number,
  skip: ReadonlySet<string> = new Set(),
): PrefetchAbsentPath[] {
  const out: PrefetchAbsentPath[] = [];
  const seen = new Set<string>();
  let jsonBytes = 0;
  for (const l of lookups) {
    const layer = pos.get(l.layer);
    if (layer === undefined || !isLayerPath(l.path)) continue;
    const key = `${layer}\0${l.path}`;
    if (seen.has(key) || skip.has(key)) continue;
    const size = Buffer.byteLength(l.path) + 16; // [layer,"path"], with room for escapes
    if (out.length >= max || jsonBytes + size > maxJsonBytes) break;
    seen.add(key);
    jsonBytes += size;
    out.push({ layer, path: l.path });
  }
  return out;
}

/** A relative path in a layer: no empty, `.` or `..` component, no NUL, at most 4096 characters. */
function isLayerPath(path: unknown): path is string {
  return typeof path === 'string' && path !== '' && path.length <= 4096 && !path.startsWith('/') && !path.includes('\0') && !path.split('/').some((p) => p === '' || p === '.' || p === '..');
}

/**
 * File reads in order -> ranges: a read that touches or overlaps earlier ranges of its file joins
 * them (reads finish out of order: a file's read-ahead can land before the read that asked for it);
 * the joined range keeps the earliest position.
 */
function joinFileReads(
  pos: ReadonlyMap<Digest, number>,
  reads: Iterable<{ readonly layer: Digest; readonly path: string; readonly offset: number; readonly length: number }>,
): PrefetchFileRange[] {
  type Range = { layer: number; path: string; offset: number; length: number; gone?: boolean };
  const out: Range[] = [];
  const byFile = new Map<string, Range[]>();
  let jsonBytes = 0;
  for (const r of reads) {
    const layer = pos.get(r.layer);
    if (layer === undefined || r.length <= 0 || r.path === '') continue;
    const key = `${layer}\0${r.path}`;
    const ranges = byFile.get(key) ?? [];
    const touching = ranges.filter((x) => r.offset <= x.offset + x.length && r.offset + r.length >= x.offset);
    if (touching.length > 0) {
      const keep = touching[0]!; // the earliest
      let start = r.offset;
      let end = r.offset + r.length;
      for (const x of touching) {
        start = Math.min(start, x.offset);
        end = Math.max(end, x.offset + x.length);
        if (x !== keep) x.gone = true;
      }
      keep.offset = start;
      keep.length = end - start;
      byFile.set(key, ranges.filter((x) => x.gone !== true));
      continue;
    }
    const size = Buffer.byteLength(r.path) + 40; // [layer,"path",offset,length], with room for escapes
    if (out.length >= MAX_PREFETCH_FILE_RANGES || jsonBytes + size > MAX_FILE_RANGE_JSON_BYTES) continue;
    jsonBytes += size;
    const range: Range = { layer, path: r.path, offset: r.offset, length: r.length };
    out.push(range);
    ranges.push(range);
    byFile.set(key, ranges);
  }
  return out.filter((x) => x.gone !== true).map(({ layer, path, offset, length }) => ({ layer, path, offset, length }));
}

/** Serialises a report (JSON, ranges as `[layer, first, count]` triples). */
export function serialisePrefetchReport(report: PrefetchReport): Uint8Array {
  const json = {
    mediaType: PREFETCH_REPORT_MEDIA_TYPE,
    version: report.version,
    manifestDigest: report.manifestDigest,
    createdAt: report.createdAt,
    layers: report.layers.map((l) => ({ digest: l.digest, format: l.format, indexId: l.indexId, blocks: l.blocks })),
    ranges: report.ranges.map((r) => [r.layer, r.first, r.count]),
    ...(report.files !== undefined ? { files: report.files.map((f) => [f.layer, f.path, f.offset, f.length]) } : {}),
    ...(report.absent !== undefined ? { absent: report.absent.map((a) => [a.layer, a.path]) } : {}),
    ...(report.looked !== undefined ? { looked: report.looked.map((a) => [a.layer, a.path]) } : {}),
    ...(report.pack !== undefined
      ? { pack: { digest: report.pack.digest, size: report.pack.size, align: report.pack.align, extend: report.pack.extend, piece: report.pack.piece, members: report.pack.members.map((m) => [m.compressedSize, m.decodedSize, m.digest]) } }
      : {}),
  };
  return new TextEncoder().encode(JSON.stringify(json));
}

const bad = (msg: string, digest?: string): ImgstreamError =>
  new ImgstreamError(ErrorCode.INVALID_PREFETCH_REPORT, `prefetch report: ${msg}`, digest !== undefined ? { digest } : {});

const isCount = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;

/** Parses and validates a serialised report; throws IMGSTREAM_INVALID_PREFETCH_REPORT. */
export function parsePrefetchReport(bytes: Uint8Array): PrefetchReport {
  if (bytes.byteLength > MAX_PREFETCH_REPORT_BYTES) throw bad(`${bytes.byteLength} bytes, more than ${MAX_PREFETCH_REPORT_BYTES}`);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new ImgstreamError(ErrorCode.INVALID_PREFETCH_REPORT, `prefetch report: not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof json !== 'object' || json === null) throw bad('not an object');
  const o = json as Record<string, unknown>;
  if (o.mediaType !== PREFETCH_REPORT_MEDIA_TYPE) throw bad(`media type ${JSON.stringify(o.mediaType)}`);
  if (o.version !== PREFETCH_REPORT_VERSION) throw bad(`unsupported version ${JSON.stringify(o.version)}`);
  if (typeof o.manifestDigest !== 'string' || !isDigest(o.manifestDigest)) throw bad('bad manifestDigest');
  const manifestDigest = o.manifestDigest;
  if (typeof o.createdAt !== 'string') throw bad('bad createdAt', manifestDigest);
  if (!Array.isArray(o.layers) || !Array.isArray(o.ranges)) throw bad('layers and ranges must be arrays', manifestDigest);
  const layers: PrefetchReportLayer[] = o.layers.map((l: unknown, i) => {
    const x = (typeof l === 'object' && l !== null ? l : {}) as Record<string, unknown>;
    if (typeof x.digest !== 'string' || !isDigest(x.digest)) throw bad(`layer ${i}: bad digest`, manifestDigest);
    if (x.format !== 'estargz' && x.format !== 'zran' && x.format !== 'raw') throw bad(`layer ${i}: bad format`, manifestDigest);
    if (typeof x.indexId !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(x.indexId)) throw bad(`layer ${i}: bad indexId`, manifestDigest);
    if (!isCount(x.blocks, 0)) throw bad(`layer ${i}: bad block count`, manifestDigest);
    return { digest: x.digest, format: x.format, indexId: x.indexId, blocks: x.blocks };
  });
  if (new Set(layers.map((l) => l.digest)).size !== layers.length) throw bad('a layer is listed twice', manifestDigest);
  const seen = layers.map(() => new Set<number>());
  const ranges: PrefetchRange[] = o.ranges.map((r: unknown, i) => {
    if (!Array.isArray(r) || r.length !== 3) throw bad(`range ${i}: not a [layer, first, count] triple`, manifestDigest);
    const [layer, first, count] = r as unknown[];
    if (!isCount(layer, 0) || layer >= layers.length) throw bad(`range ${i}: bad layer`, manifestDigest);
    if (!isCount(first, 0) || !isCount(count, 1) || first + count > layers[layer]!.blocks) throw bad(`range ${i}: blocks outside the layer`, manifestDigest);
    const s = seen[layer]!;
    for (let b = first; b < first + count; b++) {
      if (s.has(b)) throw bad(`range ${i}: block ${b} is listed twice`, manifestDigest);
      s.add(b);
    }
    return { layer, first, count };
  });
  const absent = parsePaths(o.absent, 'absent', MAX_PREFETCH_ABSENT_PATHS, layers.length, manifestDigest);
  const looked = parsePaths(o.looked, 'looked', MAX_PREFETCH_LOOKED_PATHS, layers.length, manifestDigest);
  const report = {
    version: PREFETCH_REPORT_VERSION,
    manifestDigest,
    createdAt: o.createdAt,
    layers,
    ranges,
    ...(absent !== undefined ? { absent } : {}),
    ...(looked !== undefined ? { looked } : {}),
  };
  if (o.files === undefined) {
    if (o.pack !== undefined) throw bad('a pack without files', manifestDigest);
    return report;
  }
  if (!Array.isArray(o.files) || o.files.length > MAX_PREFETCH_FILE_RANGES) throw bad(`files must be an array of at most ${MAX_PREFETCH_FILE_RANGES}`, manifestDigest);
  const files: PrefetchFileRange[] = o.files.map((f: unknown, i) => {
    if (!Array.isArray(f) || f.length !== 4) throw bad(`file ${i}: not a [layer, path, offset, length] quadruple`, manifestDigest);
    const [layer, path, offset, length] = f as unknown[];
    if (!isCount(layer, 0) || layer >= layers.length) throw bad(`file ${i}: bad layer`, manifestDigest);
    if (!isLayerPath(path)) throw bad(`file ${i}: bad path`, manifestDigest);
    if (!isCount(offset, 0) || !isCount(length, 1)) throw bad(`file ${i}: bad range`, manifestDigest);
    return { layer, path, offset, length };
  });
  if (o.pack === undefined) return { ...report, files };
  const pack = parsePack(o.pack, manifestDigest);
  return { ...report, files, pack };
}

/** `absent` or `looked`: [layer, path] pairs, no repeats. */
function parsePaths(value: unknown, field: 'absent' | 'looked', max: number, layers: number, manifestDigest: Digest): PrefetchAbsentPath[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length > max) throw bad(`${field} must be an array of at most ${max}`, manifestDigest);
  const seen = new Set<string>();
  return value.map((a: unknown, i) => {
    if (!Array.isArray(a) || a.length !== 2) throw bad(`${field} ${i}: not a [layer, path] pair`, manifestDigest);
    const [layer, path] = a as unknown[];
    if (!isCount(layer, 0) || layer >= layers) throw bad(`${field} ${i}: bad layer`, manifestDigest);
    if (!isLayerPath(path)) throw bad(`${field} ${i}: bad path`, manifestDigest);
    const key = `${layer}\0${path}`;
    if (seen.has(key)) throw bad(`${field} ${i}: listed twice`, manifestDigest);
    seen.add(key);
    return { layer, path };
  });
}

/**
 * The absent paths of a report per layer digest, in report order, without those the layer's index
 * has (a report that says otherwise is wrong about them; they are not looked up).
 */
export function absentPathsByLayer(report: PrefetchReport, indexes: ReadonlyMap<Digest, LayerIndex>): Map<Digest, string[]> {
  return pathsByLayer(report, report.absent, indexes, false);
}

/**
 * The looked-up paths of a report per layer digest, in report order, but those the layer's index
 * does not have.
 */
export function lookedPathsByLayer(report: PrefetchReport, indexes: ReadonlyMap<Digest, LayerIndex>): Map<Digest, string[]> {
  return pathsByLayer(report, report.looked, indexes, true);
}

function pathsByLayer(report: PrefetchReport, list: readonly PrefetchAbsentPath[] | undefined, indexes: ReadonlyMap<Digest, LayerIndex>, present: boolean): Map<Digest, string[]> {
  const out = new Map<Digest, string[]>();
  for (const a of list ?? []) {
    const digest = report.layers[a.layer]!.digest;
    const index = indexes.get(digest);
    if (index === undefined || index.entries.has(a.path) !== present) continue;
    const paths = out.get(digest) ?? [];
    paths.push(a.path);
    out.set(digest, paths);
  }
  return out;
}

function parsePack(value: unknown, manifestDigest: Digest): PrefetchPackDescriptor {
  const p = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (typeof p.digest !== 'string' || !isDigest(p.digest) || !isCount(p.size, 1) || !Array.isArray(p.members)) throw bad('bad pack', manifestDigest);
  const members = p.members.map((m: unknown, i) => {
    if (!Array.isArray(m) || m.length !== 3) throw bad(`pack member ${i}: not a [compressedSize, decodedSize, digest] triple`, manifestDigest);
    const [compressedSize, decodedSize, digest] = m as unknown[];
    if (!isCount(compressedSize, 1) || !isCount(decodedSize, 1) || typeof digest !== 'string' || !isDigest(digest)) throw bad(`pack member ${i} malformed`, manifestDigest);
    return { compressedSize, decodedSize, digest };
  });
  if (!isCount(p.align, 1) || !isCount(p.extend, 0) || !isCount(p.piece, 1)) throw bad('bad pack align, extend or piece', manifestDigest);
  if (members.length === 0 || members.reduce((n, m) => n + m.compressedSize, 0) !== p.size) throw bad('pack members do not add up to the pack size', manifestDigest);
  // which ranges each member holds is checked against the index when the pack is replayed
  return { digest: p.digest, size: p.size, align: p.align, extend: p.extend, piece: p.piece, members };
}

/**
 * Checks that a report fits the image as it is now: same manifest, and each layer it names is a
 * layer of the image whose index has the same identity. Throws IMGSTREAM_INVALID_PREFETCH_REPORT
 * (stale) otherwise.
 */
export function checkPrefetchReport(report: PrefetchReport, manifestDigest: Digest, indexes: ReadonlyMap<Digest, LayerIndex>): void {
  if (report.manifestDigest !== manifestDigest) throw bad(`stale: recorded for ${report.manifestDigest}, the image is ${manifestDigest}`, manifestDigest);
  for (const l of report.layers) {
    const index = indexes.get(l.digest);
    if (index === undefined) throw bad(`stale: layer ${l.digest} is not a streamed layer of the image`, manifestDigest);
    const id = layerIndexIdentity(index);
    if (id !== l.indexId || index.blocks.length !== l.blocks) throw bad(`stale: the index of layer ${l.digest} changed (${l.indexId} -> ${id})`, manifestDigest);
  }
}

/** Blocks of a report per layer, in report order (for replay). */
export function reportBytes(report: PrefetchReport, indexes: ReadonlyMap<Digest, LayerIndex>): number {
  let total = 0;
  for (const r of report.ranges) {
    const index = indexes.get(report.layers[r.layer]!.digest);
    if (index === undefined) continue;
    for (let b = r.first; b < r.first + r.count; b++) total += index.blocks[b]?.uncompressedSize ?? 0;
  }
  return total;
}

/**
 * A report made from eStargz prioritized-files landmarks: for each layer whose index knows how
 * many leading blocks hold the files before `.prefetch.landmark` (`prioritizedBlocks`), those
 * blocks, bottom layer first. Undefined when no layer has a landmark.
 */
export function landmarkPrefetchReport(manifestDigest: Digest, indexes: readonly LayerIndex[]): PrefetchReport | undefined {
  const ranges: PrefetchRange[] = [];
  indexes.forEach((index, layer) => {
    const n = (index as { prioritizedBlocks?: unknown }).prioritizedBlocks;
    if (typeof n === 'number' && n > 0 && n <= index.blocks.length) ranges.push({ layer, first: 0, count: n });
  });
  if (ranges.length === 0) return undefined;
  return { version: PREFETCH_REPORT_VERSION, manifestDigest, createdAt: new Date().toISOString(), layers: indexes.map(reportLayerOf), ranges };
}
