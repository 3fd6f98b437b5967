/**
 * Streaming engine benchmark: block fetcher and layer downloader against a loopback HTTP server
 * with Range support that serves the layer blob from a file (so the server holds no copy in memory).
 *
 *   node --expose-gc --conditions=imgstream-source --import tsx bench/src/engine.ts [--layer-mib 64] [--cache-mib 16]
 *
 * Reports cold/warm random 4 KiB read latency (p50/p99), sequential read throughput through the
 * fetcher vs a plain download of the blob in the same run, background download + unpack time, and
 * peak RSS vs the content cache bound. Raw (uncompressed) layout with the test-only index.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockFetcher, LayerCache, LayerDownloader, type FetchLayer, type RangeReader } from '@imgstream/core';
import { buildTar, pseudoRandomBytes, rawTestIndex } from '../../test/helpers/raw-layer.ts';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const layerMiB = arg('layer-mib', 64);
const cacheMiB = arg('cache-mib', 16);
const blockKiB = arg('block-kib', 64);
const randomReads = arg('reads', 400);

let peakRss = 0;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 5);

const dir = await mkdtemp(join(tmpdir(), 'imgstream-bench-'));
try {
  // a layer of 4 big files and many small ones
  const files = [
    ...Array.from({ length: 4 }, (_, i) => ({ path: `big/f${i}`, content: pseudoRandomBytes((layerMiB * 1024 * 1024) / 4 - 4096, i + 1) })),
    ...Array.from({ length: 200 }, (_, i) => ({ path: `small/s${i}`, content: pseudoRandomBytes(5000 + i * 7, 100 + i) })),
  ];
  const built = buildTar(files);
  const index = rawTestIndex(built, blockKiB * 1024);
  const blobPath = join(dir, 'blob');
  await writeFile(blobPath, built.tar);
  const size = built.tar.byteLength;
  for (const f of files) (f as { content?: Uint8Array }).content = undefined;
  built.tar = Buffer.alloc(0);

  const server = createServer((req, res) => {
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const end = m && m[2] !== '' ? Math.min(size - 1, Number(m[2])) : size - 1;
    res.writeHead(m ? 206 : 200, { 'content-length': String(end - start + 1) });
    createReadStream(blobPath, { start, end }).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/blob`;
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  const agentReader: RangeReader = {
    size,
    readRange: (offset, length, o = {}) =>
      new Promise((resolve, reject) => {
        const req = request(url, { agent, headers: { range: `bytes=${offset}-${offset + length - 1}` }, signal: o.signal }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve(Buffer.concat(chunks)));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      }),
  };
  const layer: FetchLayer = { index, reader: agentReader };
  (globalThis as { gc?: () => void }).gc?.();
  const baseRss = process.memoryUsage().rss;
  peakRss = baseRss;
  const big = index.entries.get('big/f0')!;

  // plain download of the whole blob (baseline)
  let t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    request(url, (res) => {
      res.on('data', () => {});
      res.on('end', resolve);
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
  const plainMBs = size / 1e6 / ((performance.now() - t0) / 1000);

  // cold and warm random 4 KiB reads
  const fetcher = new BlockFetcher({ maxContentCacheBytes: cacheMiB * 1024 * 1024 });
  const offsets = Array.from({ length: randomReads }, (_, i) => Math.floor(((i * 2654435761) % 1000003) / 1000003 * (big.size - 4096)));
  const time = async (fn: () => Promise<unknown>): Promise<number> => {
    const s = performance.now();
    await fn();
    return performance.now() - s;
  };
  const cold: number[] = [];
  for (const off of offsets.slice(0, Math.min(offsets.length, Math.floor((cacheMiB * 1024) / blockKiB / 2)))) cold.push(await time(() => fetcher.read(layer, big, off, 4096)));
  const warm: number[] = [];
  for (const off of offsets.slice(0, cold.length)) warm.push(await time(() => fetcher.read(layer, big, off, 4096)));
  fetcher.close();

  // sequential read of one big file in 128 KiB reads (like FUSE), read-ahead on
  const seq = new BlockFetcher({ maxContentCacheBytes: cacheMiB * 1024 * 1024 });
  const seqFile = index.entries.get('big/f1')!;
  t0 = performance.now();
  for (let off = 0; off < seqFile.size; off += 128 * 1024) await seq.read(layer, seqFile, off, 128 * 1024);
  const seqMBs = seqFile.size / 1e6 / ((performance.now() - t0) / 1000);
  const maxCache = seq.contentCache.sizeBytes;
  seq.close();

  // background download + unpack into the layer cache
  const layerCache = new LayerCache({ layerCacheDir: join(dir, 'layers') });
  const downloader = new LayerDownloader({ layerCache });
  t0 = performance.now();
  await downloader.download({ digest: index.layerDigest, source: agentReader });
  const downloadMs = performance.now() - t0;
  // local reads after completion
  const local = new BlockFetcher({ maxContentCacheBytes: cacheMiB * 1024 * 1024, layerCache });
  const localLat: number[] = [];
  for (const off of offsets.slice(0, 200)) localLat.push(await time(() => local.read(layer, big, off, 4096)));
  local.close();
  agent.destroy();
  server.close();

  const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
  const f = (n: number): string => n.toFixed(3);
  const lines = [
    `layer ${layerMiB} MiB raw, ${index.blocks.length} blocks of ${blockKiB} KiB, cache bound ${cacheMiB} MiB, node ${process.version}`,
    `| measure | value |`,
    `|---|---|`,
    `| cold random 4 KiB read p50 / p99 (ms, n=${cold.length}) | ${f(pct(cold, 50))} / ${f(pct(cold, 99))} |`,
    `| warm random 4 KiB read p50 / p99 (ms) | ${f(pct(warm, 50))} / ${f(pct(warm, 99))} |`,
    `| local (downloaded) random 4 KiB read p50 / p99 (ms) | ${f(pct(localLat, 50))} / ${f(pct(localLat, 99))} |`,
    `| sequential read through fetcher, 128 KiB reads (MB/s) | ${seqMBs.toFixed(0)} |`,
    `| plain download of the blob (MB/s) | ${plainMBs.toFixed(0)} |`,
    `| sequential / plain ratio | ${(seqMBs / plainMBs).toFixed(2)} |`,
    `| background download + verify + unpack (ms, MB/s) | ${downloadMs.toFixed(0)}, ${(size / 1e6 / (downloadMs / 1000)).toFixed(0)} |`,
    `| content cache held after sequential read (MiB) | ${(maxCache / 1048576).toFixed(1)} (bound ${cacheMiB}) |`,
    `| RSS after building the fixture / peak while reading (MiB) | ${(baseRss / 1048576).toFixed(0)} / ${(peakRss / 1048576).toFixed(0)} (growth ${((peakRss - baseRss) / 1048576).toFixed(0)} vs bound ${cacheMiB}) |`,
  ];
  console.log(lines.join('\n'));
} finally {
  clearInterval(sampler);
  await rm(dir, { recursive: true, force: true });
}
