// The engine over every index format and a real registry: BlockFetcher reads files of a zran
// (plain gzip + imgstream index), an eStargz and a raw (uncompressed) layer pushed to
// docker-registry 2.8, through RegistryClient.blobReader; a LayerDownloader of the same layers
// races the reads. Every request the fetcher makes is seen by a proxy in front of the registry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockFetcher, FetchScheduler, LayerCache, LayerDownloader, RegistryClient, indexImage, openImageLayers, parseReference, type FetchLayer, type LayerIndex } from '@imgstream/core';
import { buildImage, pushImage } from '../helpers/image-builder.ts';
import { startFaultProxy } from '../helpers/fault-proxy.ts';
import { startRegistry } from '../helpers/registry.ts';
import { pseudoRandom, type TarEntrySpec } from '../helpers/tar-builder.ts';
import { tempDir } from '../helpers/tmp.ts';

/** Files of one layer: a few large ones (random and compressible) and many small ones. */
function layerFiles(seed: number): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  files.set(`l${seed}/big-random`, pseudoRandom(2 * 1024 * 1024 + 333, seed * 100 + 1));
  files.set(`l${seed}/big-text`, pseudoRandom(1024 * 1024 + 77, seed * 100 + 2, true));
  files.set(`l${seed}/empty`, new Uint8Array(0));
  for (let i = 0; i < 40; i++) files.set(`l${seed}/small/f${i}`, pseudoRandom(100 + i * 997, seed * 100 + 10 + i, i % 2 === 0));
  return files;
}

const entriesOf = (files: Map<string, Uint8Array>): TarEntrySpec[] => [...files].map(([name, content]) => ({ type: 'file', name, content }));

function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x / 0x7fffffff;
  };
}

/** Runs `jobs` with at most `concurrency` at once. */
async function pool(jobs: Array<() => Promise<void>>, concurrency: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < jobs.length) await jobs[next++]!();
    }),
  );
}

test('BlockFetcher over zran, eStargz and raw indexes on docker-registry: random concurrent reads equal ground truth while a LayerDownloader races them and after it completes; each block fetched once', { timeout: 120_000 }, async (t) => {
  const truth = [layerFiles(0), layerFiles(1), layerFiles(2)];
  const image = buildImage({
    layers: [
      { entries: entriesOf(truth[0]!) },
      { entries: entriesOf(truth[1]!), compression: 'estargz' },
      { entries: entriesOf(truth[2]!), compression: 'none' },
    ],
  });
  const registry = await startRegistry(t);
  const pushed = await pushImage(registry.url, 'engine/formats:v1', image);
  const ref = parseReference(pushed.ref);
  const direct = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => direct.close());
  const indexed = await indexImage(direct, ref, { spanBytes: 128 * 1024 });
  assert.deepEqual(indexed.layers.map((l) => l.kind), ['zran', 'estargz', 'raw']);

  // the fetcher's registry traffic goes through a proxy that logs it
  const proxy = await startFaultProxy(t, registry.url);
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  const proxiedRef = parseReference(`${proxy.host}/engine/formats:v1`);
  const resolved = await client.resolveImage(proxiedRef, { platform: { os: 'linux', architecture: 'amd64' } });
  const opened = await openImageLayers(client, proxiedRef, resolved);
  assert.deepEqual(opened.map((l) => l.index?.format), ['zran', 'estargz', 'raw']);
  const layers: FetchLayer[] = opened.map((l) => ({ index: l.index as LayerIndex, reader: l.reader }));
  for (const l of layers) assert.ok(l.index.blocks.length >= 8, `${l.index.format}: ${l.index.blocks.length} blocks`);

  // the downloader pulls the same blobs through a second, slow proxy (about 4 MB/s) so that it races the reads
  const slow = await startFaultProxy(t, registry.url, [{ method: 'GET', path: /\/blobs\//, fault: { kind: 'slow-body', chunkBytes: 64 * 1024, delayMs: 15 } }]);
  const slowRef = parseReference(`${slow.host}/engine/formats:v1`);
  const layerCache = new LayerCache({ layerCacheDir: await tempDir(t, 'imgstream-engine-reg-') });
  await layerCache.ready();
  const scheduler = new FetchScheduler({ maxConcurrentFetches: 6 });
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 * 1024 * 1024, scheduler, layerCache, readAheadBytes: 256 * 1024 });
  t.after(() => fetcher.close());
  const downloader = new LayerDownloader({ layerCache, scheduler, downloadChunkBytes: 256 * 1024 });
  t.after(() => downloader.close());
  let localReads = 0;
  let remoteReads = 0;
  fetcher.on('read', (e) => (e.local ? localReads++ : remoteReads++));

  const before = proxy.log.length;
  const downloads = resolved.manifest.layers.map((d) => downloader.download({ digest: d.digest, size: d.size, source: direct.blobReader(slowRef, d) }));
  let downloadsDone = false;
  void Promise.allSettled(downloads).then(() => (downloadsDone = true));

  const rand = rng(7);
  const paths = truth.map((files) => [...files.keys()]);
  let readsDuringDownload = 0;
  let checkedBytes = 0;
  let nonEmptyReads = 0;
  const readJob = () => async () => {
    const li = Math.floor(rand() * 3);
    const path = paths[li]![Math.floor(rand() * paths[li]!.length)]!;
    const want = truth[li]!.get(path)!;
    const offset = Math.floor(rand() * (want.byteLength + 1));
    const length = Math.floor(rand() * (rand() < 0.2 ? 400_000 : 9000));
    const layer = layers[li]!;
    const entry = layer.index.entries.get(path);
    assert.ok(entry, path);
    const wasDone = downloadsDone;
    const got = await fetcher.read(layer, entry, offset, length);
    if (!wasDone) readsDuringDownload++;
    assert.ok(Buffer.from(got).equals(Buffer.from(want.subarray(offset, offset + length))), `${layer.index.format} ${path} @${offset}+${length}`);
    checkedBytes += got.byteLength;
    if (got.byteLength > 0) nonEmptyReads++;
  };
  await pool(Array.from({ length: 300 }, readJob), 16);
  assert.ok(readsDuringDownload > 50, `${readsDuringDownload} reads raced the download`);
  assert.ok(remoteReads > 50, `${remoteReads} reads went to the registry`);

  // each block crossed the network at most once (the cache has room for every layer)
  const fetchedBlocks = new Map<string, number>();
  let rangeRequests = 0;
  for (const entry of proxy.log.slice(before)) {
    const m = /\/blobs\/(sha256:[0-9a-f]{64})/.exec(entry.path);
    const range = /^bytes=(\d+)-(\d+)$/.exec(String(entry.headers.range ?? ''));
    assert.ok(m !== null && range !== null, `only blob range requests after the indexes are open: ${entry.method} ${entry.path} ${String(entry.headers.range)}`);
    rangeRequests++;
    const [start, end] = [Number(range[1]), Number(range[2])];
    const layer = layers.find((l) => l.index.layerDigest === m[1]);
    assert.ok(layer, m[1]);
    layer.index.blocks.forEach((b, i) => {
      if (b.compressedOffset >= start && b.compressedOffset + b.compressedSize - 1 <= end) {
        const key = `${layer.index.format}#${i}`;
        fetchedBlocks.set(key, (fetchedBlocks.get(key) ?? 0) + 1);
      }
    });
  }
  const twice = [...fetchedBlocks].filter(([, n]) => n > 1);
  assert.deepEqual(twice, [], 'no block fetched twice');
  assert.ok(fetchedBlocks.size > 20, `${fetchedBlocks.size} blocks in ${rangeRequests} requests`);
  for (const f of ['zran', 'estargz', 'raw']) assert.ok([...fetchedBlocks.keys()].some((k) => k.startsWith(`${f}#`)), `${f} blocks were fetched`);

  t.diagnostic(`${readsDuringDownload} reads raced the download (${remoteReads} remote); ${fetchedBlocks.size} blocks fetched once each in ${rangeRequests} range requests`);

  // after the downloads: the same reads are served from the local layer cache, nothing more from the registry
  const dirs = await Promise.all(downloads);
  assert.deepEqual(dirs, layers.map((l) => layerCache.dirOf(l.index.layerDigest)));
  const afterDownload = proxy.log.length;
  localReads = 0;
  remoteReads = 0;
  nonEmptyReads = 0;
  await pool(Array.from({ length: 200 }, readJob), 16);
  assert.equal(remoteReads, 0, 'no read goes to the registry once the layers are local');
  assert.equal(localReads, nonEmptyReads, 'every read (of at least one byte) is local');
  assert.ok(nonEmptyReads > 150);
  assert.equal(proxy.log.length, afterDownload, 'no request after the downloads');
  assert.ok(checkedBytes > 1_000_000, `${checkedBytes} bytes compared`);
});
