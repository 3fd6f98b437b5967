import { spawn, type ChildProcess } from 'node:child_process';
import { defaults, invalidOption, type Digest, type FilePiece } from '@imgstream/core';

/** What a warm-up did. */
export interface WarmStats {
  /** Files opened (a file whose pieces came apart is counted each time). */
  readonly files: number;
  readonly bytes: number;
  /** Pieces that could not be read (missing file, EIO): the container reads them through FUSE later. */
  readonly errors: number;
  /** Names looked up that are not there (see {@link PageCacheWarmer.lookUp}). */
  readonly lookups: number;
  readonly durationMs: number;
}

// The reader runs in a child process: reads of a FUSE mount from the process serving it would
// deadlock (synchronously) or could take every libuv pool thread the server needs (asynchronously).
// It reads JSON lines [path, offset, length] from stdin and reads them through the kernel (page
// cache) in LANES lanes at once (a file's pieces in one lane, in order; files go to lanes in turn),
// so the kernel, libfuse's threads and the server work on several requests at a time. A line
// [path] looks the path up (lstat) in one of 2 lanes of their own, so lookups (one small request
// each) do not wait behind file reads. It prints {files, bytes, errors,
// lookups} when stdin has ended and every lane is done.
const READER = `
const fs = require('node:fs');
const LANES = Number(process.argv[1]) || 1;
const lanes = Array.from({ length: LANES }, () => ({ queue: [], busy: false, fd: -1, path: '', buf: Buffer.allocUnsafe(131072) }));
const LOOKUP_LANES = 2;
const lookupLanes = Array.from({ length: LOOKUP_LANES }, () => ({ queue: [], busy: false, fd: -1, path: '' }));
const laneOf = new Map();
let nextLane = 0, nextLookup = 0, pending = '', ended = false, printed = false, files = 0, bytes = 0, errors = 0, lookups = 0;
const read = (fd, buf, length, pos) => new Promise((res, rej) => fs.read(fd, buf, 0, length, pos, (e, n) => (e ? rej(e) : res(n))));
const lstat = (path) => new Promise((res) => fs.lstat(path, () => res()));
const open = (path) => new Promise((res, rej) => fs.open(path, 'r', (e, fd) => (e ? rej(e) : res(fd))));
function closeFd(lane) { if (lane.fd >= 0) fs.close(lane.fd, () => {}); lane.fd = -1; lane.path = ''; }
async function run(lane) {
  lane.busy = true;
  while (lane.queue.length > 0) {
    const [path, offset, length] = lane.queue.shift();
    if (offset === undefined) { await lstat(path); lookups++; continue; }
    try {
      if (path !== lane.path) { closeFd(lane); lane.fd = await open(path); lane.path = path; files++; }
      for (let pos = offset, end = offset + length; pos < end;) {
        const n = await read(lane.fd, lane.buf, Math.min(lane.buf.length, end - pos), pos);
        if (n <= 0) break;
        pos += n; bytes += n;
      }
    } catch { errors++; closeFd(lane); }
  }
  lane.busy = false;
  finish();
}
function finish() {
  if (!ended || printed || lanes.some((l) => l.busy) || lookupLanes.some((l) => l.busy)) return;
  printed = true;
  for (const l of lanes) closeFd(l);
  process.stdout.write(JSON.stringify({ files, bytes, errors, lookups }));
}
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  pending += d;
  for (let i; (i = pending.indexOf('\\n')) >= 0;) {
    const line = pending.slice(0, i);
    pending = pending.slice(i + 1);
    if (line === '') continue;
    const piece = JSON.parse(line);
    let lane = piece.length === 1 ? lookupLanes[nextLookup++ % LOOKUP_LANES] : laneOf.get(piece[0]);
    if (lane === undefined) { lane = lanes[nextLane++ % LANES]; laneOf.set(piece[0], lane); }
    lane.queue.push(piece);
    if (!lane.busy) void run(lane);
  }
});
process.stdin.on('end', () => { ended = true; finish(); });
`;

/** Options of {@link ImgstreamFs.warmPageCache}. */
export interface PageCacheWarmerOptions {
  /**
   * Files read at once, each file's ranges in order (1 reads everything in order). Several let the
   * kernel, libfuse's threads and the server work on several requests at a time: python-scipy's 85 MB
   * warm-up took 1.03-1.05 s with 4 against 1.37-1.40 s with 1 (`bench/src/fuse-startup.ts`).
   * Default `defaults.fuse.pageCacheReaders` (4).
   */
  readonly readers?: number;
}

/**
 * Reads file ranges of a FUSE mount through the kernel from a child process, `readers` files at a
 * time, so that the page cache holds them (the mount keeps its page cache across opens,
 * `kernel_cache`) before a container reads them: its reads are then page-cache hits instead of one
 * FUSE request (a trip through the server's event loop) per 128 KiB and per file.
 */
export class PageCacheWarmer {
  /** Resolves when the reader finished (after {@link end}) or was stopped; never rejects. */
  readonly done: Promise<WarmStats>;
  readonly #child: ChildProcess;
  readonly #pathOf: (layerDigest: Digest, path: string) => string | undefined;
  #ended = false;

  /**
   * `pathOf`: where a layer's file is under the mount; undefined skips it (layer not served).
   * Throws IMGSTREAM_INVALID_OPTION for `readers` outside 1..64.
   */
  constructor(pathOf: (layerDigest: Digest, path: string) => string | undefined, options: PageCacheWarmerOptions = {}) {
    const readers = options.readers ?? defaults.fuse.pageCacheReaders;
    if (!Number.isInteger(readers) || readers < 1 || readers > 64) throw invalidOption('readers', `must be an integer from 1 to 64, got ${readers}`);
    this.#pathOf = pathOf;
    const started = performance.now();
    this.#child = spawn(process.execPath, ['-e', READER, String(readers)], { stdio: ['pipe', 'pipe', 'ignore'] });
    let out = '';
    this.#child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    this.#child.stdin!.on('error', () => undefined); // the reader was stopped
    this.done = new Promise<WarmStats>((resolve) => {
      const finish = (): void => {
        let stats = { files: 0, bytes: 0, errors: 0, lookups: 0 };
        try {
          stats = JSON.parse(out) as typeof stats;
        } catch {
          // stopped before it reported
        }
        resolve({ ...stats, durationMs: performance.now() - started });
      };
      this.#child.once('close', finish);
      this.#child.once('error', finish);
    });
  }

  /**
   * Queues pieces of a layer's files (paths in the layer, e.g. from `filePiecesOfBlocks`). Pieces of
   * layers the mount does not serve through FUSE are skipped. Ignored after {@link end} or {@link stop}.
   */
  add(layerDigest: Digest, pieces: readonly FilePiece[]): void {
    if (this.#ended) return;
    let lines = '';
    for (const p of pieces) {
      const path = this.#pathOf(layerDigest, p.path);
      if (path !== undefined && p.length > 0) lines += `${JSON.stringify([path, p.offset, p.length])}\n`;
    }
    this.#send(lines);
  }

  /**
   * Queues lookups of paths in a layer: paths that are not there (a prefetch report's `absent`),
   * which on a mount that caches negative entries (`negativeTimeoutMs`) a container's own lookups
   * then find missing in the kernel, and paths that are there but were not read (its `looked`),
   * whose entries the kernel then has. Either way without a FUSE request of the container's.
   * Paths of layers the mount does not serve through FUSE are skipped. Ignored after {@link end}
   * or {@link stop}.
   */
  lookUp(layerDigest: Digest, paths: readonly string[]): void {
    if (this.#ended) return;
    let lines = '';
    for (const p of paths) {
      const path = this.#pathOf(layerDigest, p);
      if (path !== undefined) lines += `${JSON.stringify([path])}\n`;
    }
    this.#send(lines);
  }

  #send(lines: string): void {
    if (lines !== '') this.#child.stdin!.write(lines);
  }

  /** No more pieces: the reader exits once it read what it has. */
  end(): Promise<WarmStats> {
    if (!this.#ended) {
      this.#ended = true;
      this.#child.stdin!.end();
    }
    return this.done;
  }

  /** Stops the reader now (reads in flight are interrupted). */
  stop(): Promise<WarmStats> {
    this.#ended = true;
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGKILL');
    return this.done;
  }
}

