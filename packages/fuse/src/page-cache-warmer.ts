import { spawn, type ChildProcess } from 'node:child_process';
import type { Digest, FilePiece } from '@imgstream/core';

/** What a warm-up did. */
export interface WarmStats {
  /** Files opened (a file whose pieces came apart is counted each time). */
  readonly files: number;
  readonly bytes: number;
  /** Pieces that could not be read (missing file, EIO): the container reads them through FUSE later. */
  readonly errors: number;
  readonly durationMs: number;
}

// The reader runs in a child process: reads of a FUSE mount from the process serving it would
// deadlock (synchronously) or could take every libuv pool thread the server needs (asynchronously).
// It reads JSON lines [path, offset, length] from stdin, in order, through the kernel (page cache),
// and prints {files, bytes, errors} when stdin ends.
const READER = `
const fs = require('node:fs');
const buf = Buffer.allocUnsafe(131072);
let pending = '', fd = -1, fdPath = '', files = 0, bytes = 0, errors = 0;
function closeFd() { if (fd >= 0) { try { fs.closeSync(fd); } catch {} } fd = -1; fdPath = ''; }
function warm(path, offset, length) {
  try {
    if (path !== fdPath) { closeFd(); fd = fs.openSync(path, 'r'); fdPath = path; files++; }
    for (let pos = offset, end = offset + length; pos < end;) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
      if (n <= 0) break;
      pos += n; bytes += n;
    }
  } catch { errors++; closeFd(); }
}
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  pending += d;
  for (let i; (i = pending.indexOf('\\n')) >= 0;) {
    const line = pending.slice(0, i);
    pending = pending.slice(i + 1);
    if (line !== '') { const [p, o, l] = JSON.parse(line); warm(p, o, l); }
  }
});
process.stdin.on('end', () => { closeFd(); process.stdout.write(JSON.stringify({ files, bytes, errors })); });
`;

/**
 * Reads file ranges of a FUSE mount through the kernel from a child process, in the order they
 * are added, so that the page cache holds them (the mount keeps its page cache across opens,
 * `kernel_cache`) before a container reads them: its reads are then page-cache hits instead of one
 * FUSE request (a trip through the server's event loop) per 128 KiB and per file.
 */
export class PageCacheWarmer {
  /** Resolves when the reader finished (after {@link end}) or was stopped; never rejects. */
  readonly done: Promise<WarmStats>;
  readonly #child: ChildProcess;
  readonly #pathOf: (layerDigest: Digest, path: string) => string | undefined;
  #ended = false;

  /** `pathOf`: where a layer's file is under the mount; undefined skips it (layer not served). */
  constructor(pathOf: (layerDigest: Digest, path: string) => string | undefined) {
    this.#pathOf = pathOf;
    const started = performance.now();
    this.#child = spawn(process.execPath, ['-e', READER], { stdio: ['pipe', 'pipe', 'ignore'] });
    let out = '';
    this.#child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    this.#child.stdin!.on('error', () => undefined); // the reader was stopped
    this.done = new Promise<WarmStats>((resolve) => {
      const finish = (): void => {
        let stats = { files: 0, bytes: 0, errors: 0 };
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

