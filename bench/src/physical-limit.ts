import { spawn } from 'node:child_process';
import { lstat, mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { makeLab } from '../../test/helpers/containerd.ts';
import type { BuiltImage } from './images/build-image.ts';
import { totalCompressed, totalUncompressed } from './images/build-image.ts';
import { dropCaches } from './scenarios/run-scenario.ts';
import type { Cleanup } from './util/cleanup.ts';
import { run } from './util/proc.ts';

/** What the workload touches before READY, measured on a plain overlay of the image's rootfs. */
export interface WorkingSet {
  /** Distinct regular files opened. */
  files: number;
  /** Sum of those files' sizes (an upper bound for a file-granular fetcher). */
  openedFileBytes: number;
  /** Bytes returned by read()/pread64() on them (misses mmap'd shared libraries). */
  readBytes: number;
  /** Bytes of the image's files in the page cache afterwards (read + mmap faults + kernel read-ahead). */
  residentBytes: number;
  /** Time to READY on the local disk with a cold page cache (no strace): CPU + disk, no network. */
  coldLocalMs: number;
  /** Same, warm page cache. */
  warmLocalMs: number;
}

/** Round trips no client can avoid: TCP connect, manifest, config, one parallel round of range reads. */
export const UNAVOIDABLE_ROUND_TRIPS = 4;

export interface PhysicalLimit {
  /** residentBytes scaled by the image's gzip ratio: what must cross the wire at the least. */
  wireBytes: number;
  /** wireBytes / bandwidth + RTT × UNAVOIDABLE_ROUND_TRIPS, ms. */
  networkBoundMs: number;
}

export function physicalLimit(image: BuiltImage, ws: WorkingSet, bandwidthBitsPerSecond: number, rttMs: number): PhysicalLimit {
  const ratio = totalCompressed(image) / totalUncompressed(image);
  const wireBytes = ws.residentBytes * ratio;
  return { wireBytes, networkBoundMs: ((wireBytes * 8) / bandwidthBitsPerSecond) * 1000 + rttMs * UNAVOIDABLE_ROUND_TRIPS };
}

function timeToReady(argv: string[], timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let readyMs: number | null = null;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (readyMs === null && out.includes('READY')) readyMs = performance.now() - t0;
    });
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0 || readyMs === null) reject(new Error(`${argv.join(' ')} exited ${code}, READY ${readyMs !== null}: ${out.slice(-1000)} ${err.slice(-2000)}`));
      else resolve(readyMs);
    });
  });
}

/**
 * Runs the image's entrypoint once in a chroot on an overlay of its rootfs (fresh upper dir, /proc
 * and /dev mounted), traced with `strace -f -e trace=openat,read,pread64`, after dropping the page
 * cache; then `fincore` on every file of the rootfs. Needs root.
 */
export async function measureWorkingSet(image: BuiltImage, parent: Cleanup): Promise<WorkingSet> {
  const c = parent.scope();
  try {
    const lab = await makeLab(c, 'imgstream-bench-ws-');
    const upper = join(lab.dir, 'upper');
    const work = join(lab.dir, 'work');
    const merged = join(lab.dir, 'merged');
    for (const d of [upper, work, merged]) await mkdir(d);
    await run(['mount', '-t', 'overlay', 'overlay', '-o', `lowerdir=${image.rootfsDir},upperdir=${upper},workdir=${work}`, merged]);
    await run(['mount', '-t', 'proc', 'proc', join(merged, 'proc')]);
    await run(['mount', '--bind', '/dev', join(merged, 'dev')]);
    const env = ['env', '-i', ...image.env];
    const cmd = [...env, '/usr/sbin/chroot', merged, ...image.cmd];

    await timeToReady(cmd, 300_000); // warm-up, then the warm and cold timings
    const warmLocalMs = await timeToReady(cmd, 300_000);
    await dropCaches();
    const coldLocalMs = await timeToReady(cmd, 300_000);

    await dropCaches();
    const traceFile = join(lab.dir, 'trace');
    await run(['strace', '-f', '-qq', '-e', 'trace=openat,open,read,pread64', '-e', 'signal=none', '-s', '0', '-o', traceFile, ...cmd], { timeoutMs: 600_000 });
    const resident = await residentBytes(image.rootfsDir);
    const { files, readBytes, openedFileBytes } = await parseTrace(await readFile(traceFile, 'utf8'), merged);
    return { files, openedFileBytes, readBytes, residentBytes: resident, coldLocalMs, warmLocalMs };
  } finally {
    await c.run();
  }
}

async function residentBytes(rootfs: string): Promise<number> {
  const { stdout } = await run(['sh', '-c', 'find "$1" -type f -print0 | xargs -0 -r fincore --bytes --noheadings --raw --output RES', 'fincore', rootfs], { timeoutMs: 300_000 });
  return stdout
    .split('\n')
    .filter(Boolean)
    .reduce((s, l) => s + Number(l.trim()), 0);
}

/** Distinct regular files opened, read() bytes on them, and their sizes, from an `strace -f` log. */
async function parseTrace(trace: string, root: string): Promise<{ files: number; readBytes: number; openedFileBytes: number }> {
  const fds = new Map<string, string>(); // "pid:fd" -> path
  const opened = new Set<string>();
  let readBytes = 0;
  for (const line of trace.split('\n')) {
    const open = /^(\d+)\s+open(?:at)?\((?:AT_FDCWD|\d+), "([^"]+)",[^)]*\)\s+=\s+(\d+)/.exec(line);
    if (open !== null) {
      const path = open[2]!;
      if (path.startsWith('/proc') || path.startsWith('/dev') || path.startsWith('/sys')) continue;
      fds.set(`${open[1]}:${open[3]}`, path);
      opened.add(path);
      continue;
    }
    const rd = /^(\d+)\s+p?read(?:64)?\((\d+),.*\)\s+=\s+(\d+)/.exec(line);
    if (rd !== null && fds.has(`${rd[1]}:${rd[2]}`)) readBytes += Number(rd[3]);
  }
  let files = 0;
  let openedFileBytes = 0;
  for (const p of opened) {
    const full = join(root, p);
    const l = await lstat(full).catch(() => null);
    if (l === null) continue;
    const s = l.isSymbolicLink() ? await stat(full).catch(() => null) : l;
    if (s === null || !s.isFile()) continue;
    files++;
    openedFileBytes += s.size;
  }
  return { files, readBytes, openedFileBytes };
}
