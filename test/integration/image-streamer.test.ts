import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, ImageStreamer, indexImage, isImgstreamError, parseReference, RegistryClient, type Digest } from '@imgstream/core';
import { startRegistry } from '../helpers/registry.ts';
import { startFaultProxy } from '../helpers/fault-proxy.ts';
import { pushTreeImage } from '../helpers/image-builder.ts';
import { tempDir } from '../helpers/tmp.ts';

test('ImageStreamer: indexed layers stream and download, unindexed ones fall back with a code; images in use and release', { timeout: 60_000 }, async (t) => {
  const registry = await startRegistry(t);
  const big = Buffer.alloc(2 * 1024 * 1024 + 17, 'imgstream ');
  const layers: Array<Record<string, string>> = [{ 'etc/a.txt': 'layer a\n' }, { 'data/big.txt': big.toString() }];
  const indexed = await pushTreeImage(registry.url, 'streamer-indexed:1', layers);
  const plain = await pushTreeImage(registry.url, 'streamer-plain:1', [{ 'etc/other.txt': 'other\n' }]);
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  await indexImage(client, parseReference(indexed.ref));

  const dir = await tempDir(t, 'imgstream-streamer-');
  const streamer = new ImageStreamer({ registry: client, layerCacheDir: join(dir, 'layers'), imagesInUsePath: join(dir, 'in-use.json'), maxContentCacheBytes: 64 << 20 });
  t.after(() => streamer.close());
  const events: string[] = [];
  streamer.on('layer-streamed', (e) => events.push(`streamed ${e.layerDigest} ${e.format}`));
  streamer.on('layer-fallback', (e) => events.push(`fallback ${e.layerDigest} ${e.code}`));
  const completed = new Map<string, string>();
  const allComplete = new Promise<void>((resolve) =>
    streamer.on('layer-complete', (e) => {
      completed.set(e.layerDigest, e.dir);
      if (completed.size === 2) resolve();
    }),
  );

  const top = await streamer.openLayer({ imageRef: indexed.ref, layerDigest: indexed.layerDigests[1]! });
  assert.equal(top.format, 'zran');
  assert.equal(top.manifestDigest, indexed.manifestDigest);
  assert.deepEqual(top.imageLayers, indexed.layerDigests);
  assert.equal(top.imageKey, `${indexed.ref}@${indexed.manifestDigest}`);
  // same layer again (with the manifest digest): the same index, no second event
  const again = await streamer.openLayer({ imageRef: indexed.ref, manifestDigest: indexed.manifestDigest, layerDigest: indexed.layerDigests[1]! });
  assert.equal(again.index, top.index);
  const entry = top.index.entries.get('data/big.txt');
  assert.ok(entry !== undefined);
  const bytes = await streamer.fetcher.read(top, entry, 1024 * 1024 - 5, 100_000);
  assert.deepEqual(Buffer.from(bytes), big.subarray(1024 * 1024 - 5, 1024 * 1024 - 5 + 100_000));
  await streamer.openLayer({ imageRef: indexed.ref, layerDigest: indexed.layerDigests[0]! });

  await assert.rejects(
    streamer.openLayer({ imageRef: plain.ref, layerDigest: plain.layerDigests[0]! }),
    (err) => isImgstreamError(err) && err.code === ErrorCode.NOT_STREAMABLE,
  );
  await assert.rejects(
    streamer.openLayer({ imageRef: indexed.ref, layerDigest: plain.layerDigests[0]! }),
    (err) => isImgstreamError(err) && err.code === ErrorCode.NOT_FOUND,
  );
  assert.deepEqual(events, [
    `streamed ${indexed.layerDigests[1]} zran`,
    `streamed ${indexed.layerDigests[0]} zran`,
    `fallback ${plain.layerDigests[0]} ${ErrorCode.NOT_STREAMABLE}`,
    `fallback ${plain.layerDigests[0]} ${ErrorCode.NOT_FOUND}`,
  ]);

  // background downloads land in the local layer cache; the state says so
  await allComplete;
  const state = streamer.layerState(indexed.layerDigests[1] as Digest);
  assert.equal(state.complete, true);
  assert.equal(state.localDir, completed.get(indexed.layerDigests[1]!));
  assert.deepEqual(await readFile(join(state.localDir!, 'data/big.txt')), big);

  // the image is in use (persisted), until released
  const onDisk = JSON.parse(await readFile(join(dir, 'in-use.json'), 'utf8')) as { images: Array<{ key: string; layers: string[] }> };
  assert.deepEqual(
    onDisk.images.map((i) => [i.key, i.layers]),
    [[top.imageKey, indexed.layerDigests]],
  );
  assert.equal(await streamer.releaseImage(top.imageKey), true);
  assert.equal(streamer.imagesInUse.isReferenced(indexed.layerDigests[0] as Digest), false);
});

test('ImageStreamer: a layer downloads once its container started reading and went quiet (downloadSilenceMs), or after downloadMaxDeferMs', { timeout: 60_000 }, async (t) => {
  const registry = await startRegistry(t);
  const big = Buffer.alloc(3 * 1024 * 1024, 'quiet please ');
  const image = await pushTreeImage(registry.url, 'streamer-quiet:1', [{ 'data/big.txt': big.toString() }]);
  const other = await pushTreeImage(registry.url, 'streamer-quiet:2', [{ 'data/other.txt': 'x'.repeat(100_000) }]);
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  await indexImage(client, parseReference(image.ref));
  await indexImage(client, parseReference(other.ref));
  const dir = await tempDir(t, 'imgstream-streamer-quiet-');
  const streamer = new ImageStreamer({ registry: client, layerCacheDir: join(dir, 'layers'), imagesInUsePath: join(dir, 'in-use.json'), downloadSilenceMs: 400, downloadMaxDeferMs: 60_000 });
  t.after(() => streamer.close());
  const firstBytes = new Map<string, number>();
  streamer.on('download-bytes', (e) => firstBytes.has(e.layerDigest) || firstBytes.set(e.layerDigest, performance.now()));

  const layer = await streamer.openLayer({ imageRef: image.ref, layerDigest: image.layerDigests[0]! });
  // the gap between the pull and the container's first read is not silence
  await sleep(1_000);
  assert.equal(firstBytes.size, 0, 'no download before the container has read anything');
  const entry = layer.index.entries.get('data/big.txt')!;
  await streamer.fetcher.read(layer, entry, 0, 4096);
  const readEnd = performance.now();
  const complete = new Promise<void>((resolve) => streamer.on('layer-complete', (e) => e.layerDigest === layer.digest && resolve()));
  await complete;
  const started = firstBytes.get(layer.digest)!;
  assert.ok(started - readEnd >= 390, `download started ${started - readEnd} ms after the last read`);

  // no reads at all: the download starts after downloadMaxDeferMs
  const deferred = new ImageStreamer({ registry: client, layerCacheDir: join(dir, 'layers2'), imagesInUsePath: join(dir, 'in-use2.json'), downloadSilenceMs: 400, downloadMaxDeferMs: 800 });
  t.after(() => deferred.close());
  const done = new Promise<number>((resolve) => deferred.on('layer-complete', () => resolve(performance.now())));
  const openedAt = performance.now();
  await deferred.openLayer({ imageRef: other.ref, layerDigest: other.layerDigests[0]! });
  assert.ok((await done) - openedAt >= 790);
});

test("ImageStreamer: an image's index artifacts and image-resolved do not wait for its config", { timeout: 60_000 }, async (t) => {
  const registry = await startRegistry(t);
  const image = await pushTreeImage(registry.url, 'streamer-early:1', [{ 'etc/a.txt': 'a\n' }]);
  const direct = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => direct.close());
  await indexImage(direct, parseReference(image.ref));
  const manifest = await direct.getManifest(parseReference(image.ref));
  assert.equal(manifest.document.kind, 'manifest');
  const configDigest = manifest.document.kind === 'manifest' ? manifest.document.manifest.config.digest : '';
  const config = new RegExp(`/blobs/${configDigest}`);
  // the config is served only once the index artifacts' referrers lookup has reached the registry
  const proxy = await startFaultProxy(t, registry.url, [{ method: 'GET', path: config, fault: { kind: 'hold', until: /\/referrers\/|\/manifests\/sha256-/, timeoutMs: 10_000 } }]);
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  const dir = await tempDir(t, 'imgstream-streamer-early-');
  const streamer = new ImageStreamer({ registry: client, layerCacheDir: join(dir, 'layers'), imagesInUsePath: join(dir, 'in-use.json'), downloadMaxDeferMs: 60_000 });
  t.after(() => streamer.close());
  const resolved: Array<{ manifestDigest: string; configRequests: number }> = [];
  streamer.on('image-resolved', (e) => resolved.push({ manifestDigest: e.manifestDigest, configRequests: proxy.log.filter((l) => config.test(l.path)).length }));
  const ref = image.ref.replace(new URL(registry.url).host, proxy.host);
  const layer = await streamer.openLayer({ imageRef: ref, layerDigest: image.layerDigests[0]! });
  assert.ok(layer.index.entries.has('etc/a.txt'));
  assert.deepEqual(resolved, [{ manifestDigest: image.manifestDigest, configRequests: 0 }]);
  assert.deepEqual(proxy.log.filter((l) => config.test(l.path)).map((l) => l.held), ['released']);
});
