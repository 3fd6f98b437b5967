/**
 * Main-thread cost of a background layer download: what the FUSE server's event loop (which also
 * answers FUSE reads) spends while LayerDownloader downloads, verifies and unpacks one large gzip
 * layer, with `unpackInWorker: true` (gunzip, digests, tar, unpack in a worker thread) against
 * `unpackInWorker: false` (all of it on the event loop), alternating in rounds within one run.
 *
 *   node --conditions=imgstream-source --import tsx bench/src/download-main-thread.ts [--rounds 3] [--files 8000] [--big-mib 160] [--source range|stream] [--modes worker,inline]
 *
 * The layer (many small text-like files plus a few large, half-compressible ones; gzip level 6) is
 * generated once and kept in $TMPDIR/imgstream-bench-layer-<files>-<big>.tar.gz. `--source range`
 * reads it through core's FileRangeReader in `downloadChunkBytes` (8 MiB) ranges, `stream` as a
 * resumable stream of 64 KiB chunks (like an HTTP body). Per round: CPU time of the main thread and
 * its run-queue delay (Linux `/proc/self/task/<pid>/schedstat`), CPU time of the process (all
 * threads), event-loop utilisation and active milliseconds (`performance.eventLoopUtilization()`;
 * active includes time the busy thread waited for a CPU), event-loop delay p50/p99/max
 * (`monitorEventLoopDelay`, 10 ms resolution), and the wall time of the download (fetch, verify,
 * unpack, syncfs, commit). Prints a Markdown table with medians and worker/inline ratios.
 */
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { access, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { tmpdir, loadavg, cpus } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { createGzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { FileRangeReader, LayerCache, LayerDownloader, type Digest, type LayerStreamOpener, type RangeReader } from '@imgstream/core';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const rounds = Number(arg('rounds', '3'));
const smallFiles = Number(arg('files', '8000'));
const bigMiB = Number(arg('big-mib', '160'));
const sourceKind = arg('source', 'range');
const modes = arg('modes', 'worker,inline').split(',');
if (sourceKind !== 'range' && sourceKind !== 'stream') throw new Error('--source is range or stream');

/** xorshift32: the same bytes on every machine. */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/** Text-like content: words from a fixed vocabulary (gzip ~3x). */
function textContent(next: () => number, vocabulary: string[], bytes: number): Buffer {
  const parts: string[] = [];
  let n = 0;
  while (n < bytes) {
    const w = vocabulary[next() % vocabulary.length]!;
    parts.push(w);
    n += w.length + 1;
  }
  return Buffer.from(parts.join(next() % 8 === 0 ? '\n' : ' ')).subarray(0, bytes);
}

/** Binary-like content: runs of a few repeated words and random bytes (gzip ~2x). */
function binaryContent(next: () => number, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  const words = Array.from({ length: 64 }, () => next());
  for (let i = 0; i + 4 <= bytes; i += 4) out.writeUInt32LE(next() % 2 === 0 ? words[next() % words.length]! : next(), i);
  return out;
}

function tarHeader(name: string, size: number, type: '0' | '5', mode: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100);
  h.write(mode.toString(8).padStart(7, '0') + '\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(size.toString(8).padStart(11, '0') + '\0', 124);
  h.write((1_700_000_000).toString(8).padStart(11, '0') + '\0', 136);
  h.write('        ', 148);
  h.write(type, 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}

async function* layerTar(): AsyncGenerator<Buffer> {
  const next = rng(42);
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  const vocabulary = Array.from({ length: 4096 }, () => Array.from({ length: 3 + (next() % 8) }, () => letters[next() % 26]).join(''));
  const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);
  for (let d = 0; d < 100; d++) yield tarHeader(`usr/lib/pkg${d}/`, 0, '5', 0o755);
  for (let i = 0; i < smallFiles; i++) {
    const size = 512 + (next() % (24 * 1024));
    const content = textContent(next, vocabulary, size);
    yield tarHeader(`usr/lib/pkg${i % 100}/file${i}.py`, content.byteLength, '0', 0o644);
    yield content;
    yield pad(content.byteLength);
  }
  yield tarHeader('opt/big/', 0, '5', 0o755);
  const bigFiles = 8;
  for (let i = 0; i < bigFiles; i++) {
    const size = Math.floor((bigMiB * 1024 * 1024) / bigFiles);
    yield tarHeader(`opt/big/lib${i}.so`, size, '0', 0o755);
    for (let off = 0; off < size; off += 1 << 20) yield binaryContent(next, Math.min(1 << 20, size - off));
    yield pad(size);
  }
  yield Buffer.alloc(1024);
}

/** The blob file, its digest and the diff ID; generated once. */
async function layerBlob(): Promise<{ path: string; digest: Digest; diffId: Digest; tarBytes: number }> {
  const path = join(tmpdir(), `imgstream-bench-layer-${smallFiles}-${bigMiB}.tar.gz`);
  const tarHash = createHash('sha256');
  let tarBytes = 0;
  try {
    await access(path);
    for await (const chunk of layerTar()) {
      tarHash.update(chunk);
      tarBytes += chunk.byteLength;
    }
  } catch {
    const tmp = `${path}.${process.pid}.tmp`;
    const counted = Readable.from(
      (async function* () {
        for await (const chunk of layerTar()) {
          tarHash.update(chunk);
          tarBytes += chunk.byteLength;
          yield chunk;
        }
      })(),
    );
    await pipeline(counted, createGzip({ level: 6 }), createWriteStream(tmp));
    await rename(tmp, path);
  }
  const blobHash = createHash('sha256');
  for await (const chunk of createReadStream(path)) blobHash.update(chunk as Buffer);
  return { path, digest: `sha256:${blobHash.digest('hex')}`, diffId: `sha256:${tarHash.digest('hex')}`, tarBytes };
}

/** CPU time of the main thread and its time waiting for a CPU (Linux schedstat), in ms. */
function mainThreadSched(): { cpuMs: number; waitMs: number } {
  try {
    const [cpu, wait] = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').trim().split(/\s+/).map(Number);
    return { cpuMs: cpu! / 1e6, waitMs: wait! / 1e6 };
  } catch {
    return { cpuMs: NaN, waitMs: NaN };
  }
}

interface Sample {
  mode: 'worker' | 'inline';
  wallMs: number;
  mainCpuMs: number;
  mainWaitMs: number;
  processCpuMs: number;
  activeMs: number;
  utilization: number;
  delayP50Ms: number;
  delayP99Ms: number;
  delayMaxMs: number;
}

async function round(unpackInWorker: boolean, blob: Awaited<ReturnType<typeof layerBlob>>, blobBytes: number): Promise<Sample> {
  const dir = await mkdtemp(join(tmpdir(), 'imgstream-bench-dl-'));
  const reader = await FileRangeReader.open(blob.path);
  const source: RangeReader | LayerStreamOpener =
    sourceKind === 'range' ? reader : (offset) => createReadStream(blob.path, { start: offset, highWaterMark: 64 * 1024 });
  try {
    const layerCache = new LayerCache({ layerCacheDir: dir });
    await layerCache.ready();
    const downloader = new LayerDownloader({ layerCache, unpackInWorker });
    const histogram = monitorEventLoopDelay({ resolution: 10 });
    const elu0 = performance.eventLoopUtilization();
    const sched0 = mainThreadSched();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    histogram.enable();
    await downloader.download({ digest: blob.digest, diffId: blob.diffId, size: blobBytes, source });
    histogram.disable();
    const wallMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const sched = mainThreadSched();
    const elu = performance.eventLoopUtilization(elu0);
    await downloader.close();
    return {
      mode: unpackInWorker ? 'worker' : 'inline',
      wallMs,
      mainCpuMs: sched.cpuMs - sched0.cpuMs,
      mainWaitMs: sched.waitMs - sched0.waitMs,
      processCpuMs: (cpu.user + cpu.system) / 1000,
      activeMs: elu.active,
      utilization: elu.utilization,
      delayP50Ms: histogram.percentile(50) / 1e6,
      delayP99Ms: histogram.percentile(99) / 1e6,
      delayMaxMs: histogram.max / 1e6,
    };
  } finally {
    await reader.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const blob = await layerBlob();
const { size: blobBytes } = await stat(blob.path);
console.log(
  `layer: ${smallFiles} small files + 8 large (${bigMiB} MiB), tar ${(blob.tarBytes / 2 ** 20).toFixed(1)} MiB, gzip ${(blobBytes / 2 ** 20).toFixed(1)} MiB; source ${sourceKind}; ` +
    `${cpus().length} CPUs, load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}; Node ${process.version}`,
);
const samples: Sample[] = [];
for (let r = 0; r < rounds; r++) {
  // alternate which mode goes first, so drift in background load affects both alike
  for (const unpackInWorker of (r % 2 === 0 ? [true, false] : [false, true]).filter((w) => modes.includes(w ? 'worker' : 'inline'))) {
    const s = await round(unpackInWorker, blob, blobBytes);
    samples.push(s);
    console.log(
      `round ${r + 1} ${s.mode.padEnd(6)} wall ${s.wallMs.toFixed(0)} ms, main thread CPU ${s.mainCpuMs.toFixed(0)} ms (waited for a CPU ${s.mainWaitMs.toFixed(0)} ms), ` +
        `process CPU ${s.processCpuMs.toFixed(0)} ms, event loop active ${s.activeMs.toFixed(0)} ms (ELU ${s.utilization.toFixed(2)}), ` +
        `loop delay p50 ${s.delayP50Ms.toFixed(1)} / p99 ${s.delayP99Ms.toFixed(1)} / max ${s.delayMaxMs.toFixed(1)} ms`,
    );
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const of = (mode: Sample['mode'], key: keyof Omit<Sample, 'mode'>): number => median(samples.filter((s) => s.mode === mode).map((s) => s[key]));
const rows: Array<[string, keyof Omit<Sample, 'mode'>, (n: number) => string]> = [
  ['main-thread CPU time during the download (ms)', 'mainCpuMs', (n) => n.toFixed(0)],
  ['event-loop active time (ms; includes waiting for a CPU while busy)', 'activeMs', (n) => n.toFixed(0)],
  ['event-loop utilisation during the download', 'utilization', (n) => n.toFixed(2)],
  ['event-loop delay p50 (ms)', 'delayP50Ms', (n) => n.toFixed(1)],
  ['event-loop delay p99 (ms)', 'delayP99Ms', (n) => n.toFixed(1)],
  ['event-loop delay max (ms)', 'delayMaxMs', (n) => n.toFixed(1)],
  ['main thread waiting for a CPU (ms, run-queue delay)', 'mainWaitMs', (n) => n.toFixed(0)],
  ['process CPU time, all threads (ms)', 'processCpuMs', (n) => n.toFixed(0)],
  ['download + verify + unpack + commit wall time (ms)', 'wallMs', (n) => n.toFixed(0)],
];
console.log(`\nmedians of ${rounds} rounds each\n`);
console.log('| measure | worker | inline | ratio worker/inline |');
console.log('|---|---|---|---|');
for (const [label, key, f] of rows) {
  const w = of('worker', key);
  const i = of('inline', key);
  console.log(`| ${label} | ${f(w)} | ${f(i)} | ${(w / i).toFixed(2)} |`);
}
