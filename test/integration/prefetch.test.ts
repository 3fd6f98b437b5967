import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ErrorCode,
  ImagePrefetcher,
  PREFETCH_ARTIFACT_TYPE,
  PREFETCH_PACK_MEDIA_TYPE,
  PREFETCH_REPORT_MEDIA_TYPE,
  isImgstreamError,
  fetchPrefetchReport,
  packRequests,
  ImageStreamer,
  PrefetchReportStore,
  RegistryClient,
  indexImage,
  parsePrefetchReport,
  parseReference,
  serialisePrefetchReport,
  type Digest,
  type FetchEvent,
  type StreamedLayer,
} from '@imgstream/core';
import { startFaultProxy } from '../helpers/fault-proxy.ts';
import { startRegistry } from '../helpers/registry.ts';
import { pushTreeImage } from '../helpers/image-builder.ts';
import { tempDir, type Teardown } from '../helpers/tmp.ts';

const FILES = 48;
const FILE_BYTES = 96 * 1024;
/** The start-up working set: every third file, read whole. */
/** Paths the workload "looked up" in its layer and did not find. */
const ABSENT = ['app/node_modules', 'app/mod0.bin.js', 'app/mod3.bin/index.js'];
/** Paths the workload looked up in its layer, found, and did not read. */
const LOOKED = ['app/mod1.bin', 'app/mod2.bin'];
const WORKLOAD = Array.from({ length: FILES }, (_, i) => i).filter((i) => i % 3 === 0).map((i) => `app/mod${i}.bin`);

async function setup(t: Teardown & { after(fn: () => unknown): void }) {
  const registry = await startRegistry(t);
  const contents = new Map<string, Buffer>();
  const app: Record<string, string> = {};
  for (let i = 0; i < FILES; i++) {
    // incompressible, latin1-safe content so the layer has many blocks
    const b = Buffer.from(randomBytes(FILE_BYTES).toString('base64').slice(0, FILE_BYTES), 'latin1');
    contents.set(`app/mod${i}.bin`, b);
    app[`app/mod${i}.bin`] = b.toString('latin1');
  }
  const image = await pushTreeImage(registry.url, 'prefetch-app:1', [{ 'etc/os-release': 'ID=test\n' }, app]);
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  await indexImage(client, parseReference(image.ref), { spanBytes: 128 * 1024 });
  return { registry, image, client, contents };
}

/** A fresh node: its own layer cache, in-use db and streamer; reports in `reportDir`. */
async function node(t: Teardown & { after(fn: () => unknown): void }, client: RegistryClient, reportDir: string, opts: Partial<ConstructorParameters<typeof ImagePrefetcher>[0]> = {}) {
  const dir = await tempDir(t, 'imgstream-prefetch-node-');
  const streamer = new ImageStreamer({ registry: client, layerCacheDir: join(dir, 'layers'), imagesInUsePath: join(dir, 'in-use.json'), backgroundDownloads: false, layerReadAheadBytes: 0, layerReadBehindBytes: 0 });
  t.after(() => streamer.close());
  const prefetcher = new ImagePrefetcher({ streamer, store: new PrefetchReportStore({ dir: reportDir }), quietMs: 1500, recordMaxMs: 15_000, ...opts });
  t.after(() => prefetcher.close());
  const fetches: FetchEvent[] = [];
  streamer.on('fetch', (e) => fetches.push(e));
  const warnings: string[] = [];
  prefetcher.on('report', (e) => e.status === 'stale' && warnings.push(e.reason ?? ''));
  return { streamer, prefetcher, fetches, warnings };
}

/** Reads the workload's files through the fetcher (as FUSE reads would), checking the bytes. */
async function runWorkload(streamer: ImageStreamer, layers: StreamedLayer[], contents: Map<string, Buffer>): Promise<void> {
  for (const path of WORKLOAD) {
    const layer = layers.find((l) => l.index.entries.has(path))!;
    const entry = layer.index.entries.get(path)!;
    const parts: Uint8Array[] = [];
    for (let off = 0; off < entry.size; off += 128 * 1024) parts.push(await streamer.fetcher.read(layer, entry, off, 128 * 1024));
    assert.deepEqual(Buffer.concat(parts), contents.get(path), path);
  }
}

/** Starts the image on a node without a report and runs the workload: the recorded report. */
async function recordOn(n: { prefetcher: ImagePrefetcher; streamer: ImageStreamer }, image: { ref: string; layerDigests: readonly string[] }, contents: Map<string, Buffer>): Promise<{ path: string; blocks: number }> {
  const recorded = new Promise<{ path: string; blocks: number }>((resolve) => n.prefetcher.on('recorded', resolve));
  await n.prefetcher.startImage(image.ref);
  const layers = await openAll(n.streamer, image.ref, image.layerDigests);
  // what a FUSE server reports of the container's lookups in vain (onAbsent); a present path is not kept
  const app = layers.find((l) => l.index.entries.has(WORKLOAD[0]!))!;
  for (const path of [...ABSENT, ABSENT[0]!, WORKLOAD[0]!]) n.prefetcher.noteAbsent(app.digest, path);
  // and of the paths it finds (onLookup): those it also reads, or that are not there, are not kept
  for (const path of [...LOOKED, WORKLOAD[0]!, 'app/nothere', LOOKED[0]!]) n.prefetcher.noteLookup(app.digest, path);
  await runWorkload(n.streamer, layers, contents);
  return recorded;
}

async function openAll(streamer: ImageStreamer, ref: string, layerDigests: readonly string[]): Promise<StreamedLayer[]> {
  return Promise.all(layerDigests.map((layerDigest) => streamer.openLayer({ imageRef: ref, layerDigest })));
}

test('prefetch: a report recorded on one node is replayed on a fresh node and serves the start-up reads from the cache', { timeout: 90_000 }, async (t) => {
  const { image, client, contents } = await setup(t);
  const reportDir = await tempDir(t, 'imgstream-prefetch-reports-');

  // node 1: no report -> records while the workload runs (no pack: the blocks are replayed)
  const a = await node(t, client, reportDir, { packs: false });
  const reports: string[] = [];
  a.prefetcher.on('report', (e) => reports.push(e.status));
  const recorded = new Promise<{ path: string; blocks: number }>((resolve) => a.prefetcher.on('recorded', resolve));
  const startA = await a.prefetcher.startImage(image.ref);
  assert.equal(startA.mode, 'record');
  assert.deepEqual(reports, ['missing']);
  const layersA = await openAll(a.streamer, image.ref, image.layerDigests);
  await runWorkload(a.streamer, layersA, contents);
  const rec = await recorded;
  const foregroundA = a.fetches.filter((f) => f.priority === 'foreground' && f.error === undefined).length;
  assert.ok(foregroundA >= 5, `node 1 fetched on demand ${foregroundA} times`);

  // the report: the manifest, both layers' index identities, compact ranges of the app layer
  const report = parsePrefetchReport(await readFile(rec.path));
  assert.equal(report.manifestDigest, image.manifestDigest);
  assert.deepEqual(report.layers.map((l) => l.digest), image.layerDigests);
  assert.ok(report.ranges.length >= 1 && report.ranges.length <= rec.blocks);
  assert.ok(report.ranges.every((r) => report.layers[r.layer]!.digest === image.layerDigests[1]));
  const appBlocks = layersA[1]!.index.blocks.length;
  assert.ok(rec.blocks < appBlocks, `recorded ${rec.blocks} of ${appBlocks} blocks: the working set, not the layer`);
  assert.ok(rec.blocks >= Math.floor(appBlocks / 4), `recorded ${rec.blocks} of ${appBlocks} blocks`);

  // node 2: fresh caches, same report -> replay, then the workload reads from the cache
  const b = await node(t, client, reportDir, { packs: false });
  const statuses: string[] = [];
  b.prefetcher.on('report', (e) => statuses.push(e.status));
  const startB = await b.prefetcher.startImage(image.ref);
  assert.equal(startB.mode, 'replay');
  assert.deepEqual(statuses, ['found']);
  const result = await startB.replay!.done;
  assert.equal(result.failedBatches, 0);
  assert.equal(result.reportBlocks, rec.blocks);
  assert.ok(result.blocks >= rec.blocks, `${result.blocks} blocks loaded (small gaps filled)`);
  const prefetchRequests = b.fetches.filter((f) => f.priority === 'prefetch').length;
  assert.ok(prefetchRequests < rec.blocks, `${prefetchRequests} merged range requests for ${rec.blocks} blocks`);
  const layersB = await openAll(b.streamer, image.ref, image.layerDigests);
  await runWorkload(b.streamer, layersB, contents);
  const foregroundB = b.fetches.filter((f) => f.priority === 'foreground').length;
  const { hits, misses } = startB.replay!;
  const ratio = hits / (hits + misses);
  t.diagnostic(`node 1: ${foregroundA} foreground fetches; node 2: ${foregroundB}, prefetch hits ${hits}, misses ${misses} (${(ratio * 100).toFixed(1)}%), ${prefetchRequests} prefetch requests for ${rec.blocks} listed blocks (${result.blocks} with gaps), ${result.bytes} bytes`);
  assert.ok(ratio > 0.9, `hit ratio ${ratio}`);
  assert.ok(foregroundB <= foregroundA / 10, `foreground fetches ${foregroundA} -> ${foregroundB}`);

  // the same manifest starts once per node
  assert.equal(await b.prefetcher.startImage(image.ref), startB);
});

test('prefetch: a report pushed to the registry as an artifact referring to the image serves a node without a local report', { timeout: 90_000 }, async (t) => {
  const { image, client, contents } = await setup(t);
  const a = await node(t, client, await tempDir(t, 'imgstream-prefetch-reports-'), { pushReports: true });
  const pushed = new Promise<{ artifactDigest: string }>((resolve) => a.prefetcher.on('pushed', resolve));
  await a.prefetcher.startImage(image.ref);
  await runWorkload(a.streamer, await openAll(a.streamer, image.ref, image.layerDigests), contents);
  const { artifactDigest } = await pushed;
  const artifact = await client.getManifest(parseReference(image.ref), { digest: artifactDigest as Digest });
  assert.ok(artifact.document.kind === 'manifest');
  assert.deepEqual(artifact.document.manifest.layers.map((l) => l.mediaType), [PREFETCH_REPORT_MEDIA_TYPE, PREFETCH_PACK_MEDIA_TYPE], 'the report, then its pack');
  const referrers = await client.referrers(parseReference(image.ref), image.manifestDigest as Digest, { artifactType: PREFETCH_ARTIFACT_TYPE });
  assert.deepEqual(referrers.map((r) => r.digest), [artifactDigest]);
  const fromRegistry = await fetchPrefetchReport(client, parseReference(image.ref), image.manifestDigest as Digest);
  assert.deepEqual(fromRegistry, parsePrefetchReport(await readFile(join(a.prefetcher.store.dir, `${image.manifestDigest.replace(':', '-')}.json`))));

  // a node with an empty report dir finds it in the registry, keeps a local copy, replays it
  const emptyDir = await tempDir(t, 'imgstream-prefetch-reports-');
  const c = await node(t, client, emptyDir);
  const sources: string[] = [];
  c.prefetcher.on('report', (e) => sources.push(`${e.status} ${e.source}`));
  // the pack is read ahead once the image's manifest resolves, before the start (which needs the indexes)
  const pack = fromRegistry!.pack!;
  const packReads: string[] = [];
  const onRequest = (m: unknown): void => void ((m as { url: string }).url.includes(pack.digest.slice(7)) && packReads.push((m as { url: string }).url));
  diagnostics.subscribe('imgstream:core:registry-request', onRequest);
  t.after(() => diagnostics.unsubscribe('imgstream:core:registry-request', onRequest));
  await c.streamer.imageLayers(image.ref);
  for (let i = 0; i < 250 && packReads.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.ok(packReads.length > 0, 'the pack was asked for before the start');
  const startC = await c.prefetcher.startImage(image.ref);
  assert.deepEqual(sources, ['found registry']);
  const resultC = await startC.replay!.done;
  assert.ok('pack' in resultC && resultC.pack.error === undefined, 'the pack was read from the registry');
  assert.equal(packReads.length, packRequests(pack).length, 'the replay took the requests read ahead and made none of its own');
  assert.equal(c.fetches.filter((f) => f.priority === 'prefetch').length, 0, 'no block was fetched for the replay');
  await runWorkload(c.streamer, await openAll(c.streamer, image.ref, image.layerDigests), contents);
  assert.ok(startC.replay!.hits / (startC.replay!.hits + startC.replay!.misses) > 0.9);
  assert.equal(c.fetches.filter((f) => f.priority === 'foreground').length, 0);
  // the local copy is written in the background
  let local = await c.prefetcher.store.get(image.manifestDigest as Digest);
  for (let i = 0; i < 100 && local === undefined; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    local = await c.prefetcher.store.get(image.manifestDigest as Digest);
  }
  assert.deepEqual(local, fromRegistry);
});

test('prefetch: corrupt or stale reports are ignored with a warning and never break a start; the budget and wait bounds hold', { timeout: 90_000 }, async (t) => {
  const { registry, image, client, contents } = await setup(t);
  const reportDir = await tempDir(t, 'imgstream-prefetch-reports-');
  const a = await node(t, client, reportDir);
  const rec = await recordOn(a, image, contents);
  const good = await readFile(rec.path);
  const report = parsePrefetchReport(good);

  // corrupt: not JSON
  await writeFile(rec.path, good.subarray(0, 40));
  const c = await node(t, client, reportDir, { record: false });
  const startC = await c.prefetcher.startImage(image.ref);
  assert.equal(startC.mode, 'none');
  assert.equal(c.warnings.length, 1);
  assert.match(c.warnings[0]!, /not JSON/);
  await runWorkload(c.streamer, await openAll(c.streamer, image.ref, image.layerDigests), contents);

  // stale: the app layer's index changed since recording
  const stale = { ...report, layers: report.layers.map((l, i) => (i === 1 ? { ...l, indexId: `sha256:${'ab'.repeat(32)}` } : l)) };
  await writeFile(rec.path, serialisePrefetchReport(stale));
  const d = await node(t, client, reportDir);
  const startD = await d.prefetcher.startImage(image.ref);
  assert.equal(startD.mode, 'record', 'a stale report is replaced by a new recording');
  assert.match(d.warnings[0]!, /stale: the index of layer/);
  assert.equal(d.fetches.filter((f) => f.priority === 'prefetch').length, 0);
  await runWorkload(d.streamer, await openAll(d.streamer, image.ref, image.layerDigests), contents);
  startD.recorder!.stop();

  // budget: only the first blocks (in report order) within budgetBytes
  await writeFile(rec.path, good);
  const layers = await openAll(d.streamer, image.ref, image.layerDigests);
  const blockBytes = layers[1]!.index.blocks[report.ranges[0]!.first]!.uncompressedSize;
  const e = await node(t, client, reportDir, { budgetBytes: blockBytes * 2 + 1 });
  const startE = await e.prefetcher.startImage(image.ref);
  const resE = await startE.replay!.done;
  assert.ok(resE.bytes <= blockBytes * 2 + 1 && resE.blocks >= 1, `${resE.bytes} bytes in ${resE.blocks} blocks`);
  assert.equal(resE.skippedBlocks, resE.reportBlocks - resE.blocks);
  const fetchedE = e.fetches.filter((f) => f.priority === 'prefetch').reduce((n, f) => n + f.bytes, 0);
  assert.ok(fetchedE <= blockBytes * 2 + 1, `fetched ${fetchedE}`);

  // wait bound: blob reads crawl; startImage returns after waitMs anyway, the replay goes on
  const proxy = await startFaultProxy(t, registry.url);
  const slowClient = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => slowClient.close());
  const slowRef = image.ref.replace(registry.host, proxy.host);
  const f = await node(t, slowClient, reportDir, { waitMs: 300, packs: false });
  const layersF = await openAll(f.streamer, slowRef, image.layerDigests);
  proxy.setRules([{ method: 'GET', path: /\/blobs\//, fault: { kind: 'slow-body', chunkBytes: 4096, delayMs: 50 } }]);
  const t0 = performance.now();
  const startF = await f.prefetcher.startImageLayers(slowRef, layersF);
  const waited = performance.now() - t0;
  assert.equal(startF.mode, 'replay');
  assert.equal(startF.firstBatchReady, false);
  assert.ok(waited < 300 + 700, `startImage took ${waited} ms with waitMs 300`);
  f.prefetcher.close();
});

test('prefetch pack: a recorded report carries a pack of its file ranges; a fresh node reads it in a few range requests and serves the start-up reads from memory', { timeout: 90_000 }, async (t) => {
  const { image, client, contents } = await setup(t);
  const reportDir = await tempDir(t, 'imgstream-prefetch-reports-');
  const a = await node(t, client, reportDir);
  const rec = await recordOn(a, image, contents);
  const report = parsePrefetchReport(await readFile(rec.path));
  assert.ok(report.pack !== undefined && report.files !== undefined, 'the report names a pack');
  assert.deepEqual(report.absent?.map((a) => a.path), ABSENT, 'absent paths in first-lookup order, once each, present ones not kept');
  assert.deepEqual(report.looked?.map((a) => a.path), LOOKED, 'looked-up paths in first-lookup order, once each, not the read ones');
  const packed = report.pack.members.reduce((n, m) => n + m.decodedSize, 0);
  const workload = WORKLOAD.reduce((n, p) => n + contents.get(p)!.byteLength, 0);
  // the ranges, widened to whole 96 KiB files: exactly the workload's bytes
  assert.equal(packed, workload);
  const packFile = await readFile(a.prefetcher.store.packPathOf(report.pack));
  assert.equal(packFile.byteLength, report.pack.size);

  // a fresh node with the report and its pack: no block is fetched, every read is answered
  const b = await node(t, client, reportDir);
  const errors: unknown[] = [];
  b.prefetcher.on('error', (e) => errors.push(e));
  const warm: string[] = [];
  const loadedLayers = new Set<string>();
  b.prefetcher.on('files-loaded', (e) => {
    loadedLayers.add(e.layerDigest);
    warm.push(...e.pieces.map((p) => `${p.path}@${p.offset}+${p.length}`));
  });
  const absent: string[] = [];
  // a layer's absent paths come when the replay ends, after its loaded files (marked `early:` otherwise)
  b.prefetcher.on('absent-paths', (e) => absent.push(...e.paths.map((p) => (loadedLayers.has(e.layerDigest) ? p : `early:${p}`))));
  const looked: string[] = [];
  b.prefetcher.on('looked-paths', (e) => looked.push(...e.paths));
  const start = await b.prefetcher.startImage(image.ref);
  assert.equal(start.mode, 'replay');
  assert.equal(start.firstBatchReady, true);
  const result = await start.replay!.done;
  assert.ok('pack' in result, 'the pack was replayed');
  assert.equal(result.pack.error, undefined);
  assert.equal(result.pack.packBytes, report.pack.size);
  assert.equal(result.bytes, packed);
  // the page-cache warm-up is handed the pinned ranges as they arrive (here: the workload's files, whole)
  assert.deepEqual(warm.sort(), report.files.map((f) => `${f.path}@${f.offset}+${f.length}`).sort());
  assert.deepEqual(absent, ABSENT, 'the absent paths are handed to the warm-up');
  assert.deepEqual(looked, LOOKED, 'and the looked-up ones');
  await runWorkload(b.streamer, await openAll(b.streamer, image.ref, image.layerDigests), contents);
  assert.equal(b.fetches.length, 0, 'nothing was fetched from the registry: the pack was local');
  const { hits, misses } = start.replay!;
  t.diagnostic(`pack: ${report.pack.members.length} members, ${report.pack.size} bytes for ${packed} decoded; hits ${hits}, misses ${misses}`);
  assert.equal(misses, 0);
  assert.ok(hits >= WORKLOAD.length, `${hits} ranges read from the pack`);
  assert.deepEqual(errors, []);
  // after the start-up window the ranges are let go; reads go through the fetcher again
  start.replay!.stop();
  assert.equal(b.streamer.fetcher.pinned.size, 0);
  await runWorkload(b.streamer, await openAll(b.streamer, image.ref, image.layerDigests), contents);

  // a container of the image starting (the snapshotter asks for its lower dirs) while the replay
  // runs: the absent paths are handed out then, once, not when the replay ends
  const c = await node(t, client, reportDir);
  const order: string[] = [];
  c.prefetcher.on('files-loaded', () => {
    if (order.length > 0) return;
    order.push('files-loaded');
    c.prefetcher.containerStarting(image.manifestDigest as Digest);
    order.push('containerStarting returned');
  });
  c.prefetcher.on('absent-paths', (e) => order.push(`absent-paths ${e.paths.join(',')}`));
  c.prefetcher.on('looked-paths', (e) => order.push(`looked-paths ${e.paths.join(',')}`));
  c.prefetcher.on('replayed', () => order.push('replayed'));
  await (await c.prefetcher.startImage(image.ref)).replay!.done;
  assert.deepEqual(order, ['files-loaded', `absent-paths ${ABSENT.join(',')}`, `looked-paths ${LOOKED.join(',')}`, 'containerStarting returned', 'replayed']);

  // a report stored over it without that pack, or deleted, takes its pack file along
  const store = a.prefetcher.store;
  const packPath = store.packPathOf(report.pack);
  const { pack: _pack, ...withoutPack } = report;
  await store.put(withoutPack);
  await assert.rejects(readFile(packPath), /ENOENT/);
  await store.put(report);
  await writeFile(packPath, packFile);
  assert.equal(await store.delete(image.manifestDigest as Digest), true);
  await assert.rejects(readFile(packPath), /ENOENT/);
  assert.equal(await store.get(image.manifestDigest as Digest), undefined);
});

test('prefetch pack: a corrupt pack, one that does not fit the image, or a pack read that crawls never breaks a start: the blocks are fetched instead', { timeout: 120_000 }, async (t) => {
  const { registry, image, client, contents } = await setup(t);
  const reportDir = await tempDir(t, 'imgstream-prefetch-reports-');
  const a = await node(t, client, reportDir, { pushReports: true });
  const pushed = new Promise((resolve) => a.prefetcher.on('pushed', resolve));
  await a.prefetcher.startImage(image.ref);
  await runWorkload(a.streamer, await openAll(a.streamer, image.ref, image.layerDigests), contents);
  await pushed;
  const report = (await a.prefetcher.store.get(image.manifestDigest as Digest))!;
  const packPath = a.prefetcher.store.packPathOf(report.pack!);
  const good = await readFile(packPath);

  // corrupt: a flipped byte in the middle of the local pack -> that member's digest fails
  const bad = Buffer.from(good);
  bad[bad.byteLength >> 1]! ^= 0xff;
  await writeFile(packPath, bad);
  const b = await node(t, client, reportDir);
  const errors: unknown[] = [];
  b.prefetcher.on('error', (e) => errors.push(e));
  const startB = await b.prefetcher.startImage(image.ref);
  const resultB = await startB.replay!.done;
  assert.ok('pack' in resultB && isImgstreamError(resultB.pack.error, ErrorCode.DIGEST_MISMATCH), String('pack' in resultB ? resultB.pack.error : resultB));
  assert.ok(errors.some((e) => isImgstreamError(e, ErrorCode.DIGEST_MISMATCH)), 'the corrupt pack is reported');
  await runWorkload(b.streamer, await openAll(b.streamer, image.ref, image.layerDigests), contents);
  assert.ok(b.fetches.filter((f) => f.error === undefined).length > 0, 'what the pack did not deliver was fetched');
  // the ranges of the corrupt member (and of members not asked for after it) did not arrive: the
  // blocks of those ranges are what is replayed; the others stay pinned
  assert.ok(resultB.pack.missing.length > 0 && resultB.pack.ranges > 0, `${resultB.pack.ranges} ranges pinned, ${resultB.pack.missing.length} missing`);

  // does not fit: the report's pack descriptor disagrees with its ranges -> ignored, blocks replayed
  await writeFile(packPath, good);
  const wrong = { ...report, pack: { ...report.pack!, members: report.pack!.members.map((m, i) => (i === 0 ? { ...m, decodedSize: m.decodedSize + 1 } : m)) } };
  await writeFile(a.prefetcher.store.pathOf(image.manifestDigest as Digest), serialisePrefetchReport(wrong));
  const c = await node(t, client, reportDir);
  const errorsC: unknown[] = [];
  c.prefetcher.on('error', (e) => errorsC.push(e));
  const startC = await c.prefetcher.startImage(image.ref);
  const resultC = await startC.replay!.done;
  assert.ok(!('pack' in resultC), 'the blocks were replayed');
  assert.ok(resultC.blocks > 0 && resultC.failedBatches === 0);
  assert.match(String(errorsC[0]), /does not fit the image/);
  await runWorkload(c.streamer, await openAll(c.streamer, image.ref, image.layerDigests), contents);

  // crawls: a node without a local report reads the pack from the registry through a slow proxy;
  // container creation waits waitMs at most, the reads are served all the same
  const proxy = await startFaultProxy(t, registry.url);
  const slowClient = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => slowClient.close());
  const slowRef = image.ref.replace(registry.host, proxy.host);
  const d = await node(t, slowClient, await tempDir(t, 'imgstream-prefetch-reports-'), { waitMs: 300 });
  // (slow before the image resolves: its pack is read ahead from then on)
  proxy.setRules([{ method: 'GET', path: new RegExp(report.pack!.digest.slice('sha256:'.length)), fault: { kind: 'slow-body', chunkBytes: 4096, delayMs: 50 } }]);
  const layersD = await openAll(d.streamer, slowRef, image.layerDigests);
  const t0 = performance.now();
  const startD = await d.prefetcher.startImageLayers(slowRef, layersD);
  const waited = performance.now() - t0;
  assert.equal(startD.mode, 'replay');
  assert.equal(startD.firstBatchReady, false);
  assert.ok(waited < 300 + 700, `startImage took ${waited} ms with waitMs 300`);
  // closing stops the replay and lets its ranges go: reads are served through the fetcher
  await d.prefetcher.close();
  const resultD = await startD.replay!.done;
  assert.ok('pack' in resultD && isImgstreamError(resultD.pack.error, ErrorCode.CLOSED), String('pack' in resultD ? resultD.pack.error : resultD));
  assert.equal(d.streamer.fetcher.pinned.size, 0);
  await runWorkload(d.streamer, layersD, contents);
});
