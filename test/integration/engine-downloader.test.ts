import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BlockFetcher, buildRawIndex, FetchScheduler, LayerCache, LayerDownloader, sha256Digest } from '@imgstream/core';
import { httpRangeReader, httpStreamOpener, startRangeServer } from '../helpers/range-server.ts';
import { buildTar, chunked, gzip, pseudoRandom } from '../helpers/tar-builder.ts';
import { tempDir } from '../helpers/tmp.ts';

async function layer(seed: number, bytes = 600_000) {
  const tar = buildTar([{ type: 'file', name: `data-${seed}`, content: pseudoRandom(bytes, seed) }]);
  const blob = Buffer.from(gzip(tar));
  return { blob, digest: sha256Digest(blob), diffId: sha256Digest(tar) };
}

test('one download per layer however many ask; it is cancelled only when every requester has gone', async (t) => {
  const fx = await layer(1, 2_000_000);
  const server = await startRangeServer(t, fx.blob, { bytesPerSecond: 2 * 1024 * 1024 });
  const cacheDir = await tempDir(t);
  const layerCache = new LayerCache({ layerCacheDir: cacheDir });
  const downloader = new LayerDownloader({ layerCache });
  t.after(() => downloader.close());
  const req = { digest: fx.digest, diffId: fx.diffId, source: httpStreamOpener(server.url) };
  const quitter = new AbortController();
  const reason = new Error('not needed');
  const a = downloader.download(req, { signal: quitter.signal });
  const b = downloader.download(req);
  quitter.abort(reason);
  await assert.rejects(a, (e) => e === reason);
  const dir = await b;
  assert.equal(server.requests.length, 1, 'one shared download');
  assert.equal((await readFile(join(dir, 'data-1'))).byteLength, 2_000_000);

  // every requester gone: the download stops and leaves nothing
  const fx2 = await layer(2, 2_000_000);
  const server2 = await startRangeServer(t, fx2.blob, { bytesPerSecond: 1024 * 1024 });
  const c1 = new AbortController();
  const c2 = new AbortController();
  const p1 = downloader.download({ digest: fx2.digest, source: httpStreamOpener(server2.url) }, { signal: c1.signal });
  const p2 = downloader.download({ digest: fx2.digest, source: httpStreamOpener(server2.url) }, { signal: c2.signal });
  await new Promise((r) => setTimeout(r, 100));
  c1.abort(reason);
  c2.abort(reason);
  await assert.rejects(p1, (e) => e === reason);
  await assert.rejects(p2, (e) => e === reason);
  for (let i = 0; i < 100 && (await readdir(join(cacheDir, '.staging'))).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(await readdir(join(cacheDir, '.staging')), []);
  assert.equal(layerCache.has(fx2.digest), false);
  assert.deepEqual(downloader.pending, []);
});

test('at most maxLayerDownloads layers download at once', async (t) => {
  const layerCache = new LayerCache({ layerCacheDir: await tempDir(t) });
  const downloader = new LayerDownloader({ layerCache, maxLayerDownloads: 2 });
  t.after(() => downloader.close());
  let active = 0;
  let maxActive = 0;
  const fixtures = await Promise.all([11, 12, 13, 14, 15].map((s) => layer(s, 300_000)));
  const servers = await Promise.all(fixtures.map((fx) => startRangeServer(t, fx.blob, { bytesPerSecond: 1024 * 1024 })));
  const dirs = await Promise.all(
    fixtures.map(async (fx, i) => {
      const opener = httpStreamOpener(servers[i]!.url);
      return downloader.download({
        digest: fx.digest,
        source: (offset, o) =>
          (async function* () {
            active++;
            maxActive = Math.max(maxActive, active);
            try {
              yield* opener(offset, o);
            } finally {
              active--;
            }
          })(),
      });
    }),
  );
  assert.equal(dirs.length, 5);
  assert.equal(maxActive, 2);
});

test('prefetch (loadBlocks) fills the cache with coalesced requests so later reads stay off the network', async (t) => {
  const files = [{ path: 'a', content: pseudoRandom(700_000, 3) }];
  const tar = Buffer.from(buildTar(files.map((f) => ({ type: 'file', name: f.path, content: f.content }))));
  const index = await buildRawIndex(chunked(tar, 1 << 20), { spanBytes: 64 * 1024 });
  const server = await startRangeServer(t, tar);
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 1 << 24, readAheadBytes: 0, scheduler: new FetchScheduler({ maxConcurrentFetches: 2 }) });
  t.after(() => fetcher.close());
  const l = { index, reader: httpRangeReader(server.url, tar.byteLength) };
  const entry = index.entries.get('a')!;
  const blocks = entry.extents!.map((e) => e.block);
  await fetcher.loadBlocks(l, blocks);
  assert.equal(server.requests.length, 1, 'adjacent blocks in one request');
  const got = await fetcher.read(l, entry, 0, 700_000);
  assert.deepEqual(Buffer.from(got), Buffer.from(files[0]!.content));
  assert.equal(server.requests.length, 1);
});
