import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BlockFetcher,
  BufferRangeReader,
  ErrorCode,
  PrefetchRecorder,
  PrefetchReplay,
  buildPrefetchReport,
  checkPrefetchReport,
  isImgstreamError,
  landmarkPrefetchReport,
  openEstargzIndex,
  parsePrefetchReport,
  reportLayerOf,
  serialisePrefetchReport,
  sha256Digest,
  type Digest,
  type FetchEvent,
  type LayerIndex,
} from '@imgstream/core';
import { buildEstargz } from '../../../test/helpers/estargz-builder.ts';
import { pseudoRandom, type TarEntrySpec } from '../../../test/helpers/tar-builder.ts';

const manifest = sha256Digest('manifest') as Digest;
const invalid = (re: RegExp) => (e: unknown) => isImgstreamError(e, ErrorCode.INVALID_PREFETCH_REPORT) && re.test(String(e));

/** An eStargz layer: prioritized files, the landmark, then the rest (64 KiB chunks, one block each). */
async function landmarkLayer(withLandmark = true) {
  const entries: TarEntrySpec[] = [
    { type: 'file', name: 'usr/bin/python', content: pseudoRandom(200_000, 1) },
    { type: 'file', name: 'usr/lib/libc.so', content: pseudoRandom(100_000, 2) },
    ...(withLandmark ? [{ type: 'file' as const, name: '.prefetch.landmark', content: new Uint8Array([0xf]) }] : []),
    { type: 'file', name: 'usr/share/doc/big', content: pseudoRandom(400_000, 3) },
  ];
  const { blob } = buildEstargz(entries, { chunkSize: 65536 });
  const index = await openEstargzIndex(new BufferRangeReader(blob), { layerDigest: sha256Digest(blob) });
  return { blob, index };
}

test('prefetch report: ordered, deduplicated runs; round-trips; malformed and stale reports are rejected with a code', async () => {
  const { index } = await landmarkLayer();
  const layer = reportLayerOf(index);
  const reads = [5, 6, 6, 7, 2, 3, 5, 0, 9].map((block) => ({ layer: index.layerDigest, block }));
  const report = buildPrefetchReport(manifest, [layer], [...reads, { layer: sha256Digest('other'), block: 1 }]);
  assert.deepEqual(report.ranges, [
    { layer: 0, first: 5, count: 3 },
    { layer: 0, first: 2, count: 2 },
    { layer: 0, first: 0, count: 1 },
    { layer: 0, first: 9, count: 1 },
  ]);
  const bytes = serialisePrefetchReport(report);
  assert.deepEqual(parsePrefetchReport(bytes), report);
  assert.match(layer.indexId, /^sha256:[0-9a-f]{64}$/);

  const edit = (fn: (j: Record<string, unknown>) => void) => {
    const j = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
    fn(j);
    return new TextEncoder().encode(JSON.stringify(j));
  };
  assert.throws(() => parsePrefetchReport(bytes.subarray(0, 30)), invalid(/not JSON/));
  assert.throws(() => parsePrefetchReport(edit((j) => (j.version = 2))), invalid(/unsupported version 2/));
  assert.throws(() => parsePrefetchReport(edit((j) => (j.ranges = [[0, 5, 2], [0, 6, 1]]))), invalid(/block 6 is listed twice/));
  assert.throws(() => parsePrefetchReport(edit((j) => (j.ranges = [[0, index.blocks.length - 1, 2]]))), invalid(/outside the layer/));
  assert.throws(() => parsePrefetchReport(edit((j) => (j.ranges = [[1, 0, 1]]))), invalid(/bad layer/));
  assert.throws(() => parsePrefetchReport(new Uint8Array(5 * 1024 * 1024)), invalid(/more than/));

  const indexes = new Map<Digest, LayerIndex>([[index.layerDigest, index]]);
  checkPrefetchReport(report, manifest, indexes);
  assert.throws(() => checkPrefetchReport(report, sha256Digest('other') as Digest, indexes), invalid(/stale: recorded for/));
  const { index: rebuilt } = await landmarkLayer(false);
  assert.throws(() => checkPrefetchReport(report, manifest, new Map([[index.layerDigest, rebuilt]])), invalid(/stale: the index of layer/));
  assert.throws(() => checkPrefetchReport(report, manifest, new Map()), invalid(/not a streamed layer/));
});

test('eStargz prioritized files: the blocks before .prefetch.landmark become a report and are replayed', async () => {
  const { blob, index } = await landmarkLayer();
  // python (4 chunks) + libc (2 chunks) precede the landmark
  assert.equal(index.prioritizedBlocks, 6);
  assert.equal((await landmarkLayer(false)).index.prioritizedBlocks, undefined);
  const report = landmarkPrefetchReport(manifest, [index])!;
  assert.deepEqual(report.ranges, [{ layer: 0, first: 0, count: 6 }]);
  assert.equal(landmarkPrefetchReport(manifest, [(await landmarkLayer(false)).index]), undefined);

  const fetcher = new BlockFetcher({ readAheadBytes: 0 });
  const fetches: FetchEvent[] = [];
  fetcher.on('fetch', (e) => fetches.push(e));
  const layer = { index, reader: new BufferRangeReader(blob) };
  const replay = new PrefetchReplay({ fetcher, report, layers: new Map([[index.layerDigest, layer]]) });
  const result = await replay.done;
  assert.equal(result.blocks, 6);
  assert.equal(fetches.length, 1, 'one merged range request');
  assert.equal(fetches[0]!.priority, 'prefetch');
  // python and libc read from the cache: hits; the doc file was not prefetched: misses
  const python = index.entries.get('usr/bin/python')!;
  assert.deepEqual(await fetcher.read(layer, python, 0, python.size), pseudoRandom(200_000, 1));
  const hitsAfterPython = replay.hits;
  assert.equal(hitsAfterPython, 4);
  assert.equal(replay.misses, 0);
  const doc = index.entries.get('usr/share/doc/big')!;
  await fetcher.read(layer, doc, 0, 1000);
  assert.equal(replay.misses, 1);
  replay.stop();
  fetcher.close();
});

test('recorder: foreground reads in order until quiet; read-ahead and prefetch lookups are not recorded', async () => {
  const { blob, index } = await landmarkLayer();
  const fetcher = new BlockFetcher({ readAheadBytes: 64 * 1024 });
  const layer = { index, reader: new BufferRangeReader(blob) };
  const recorder = new PrefetchRecorder({ fetcher, manifestDigest: manifest, layers: [index], quietMs: 150, recordMaxMs: 10_000 });
  const doc = index.entries.get('usr/share/doc/big')!;
  const libc = index.entries.get('usr/lib/libc.so')!;
  await fetcher.read(layer, doc, 70_000, 10);
  await fetcher.read(layer, libc, 0, 10);
  await fetcher.read(layer, doc, 70_000, 10);
  await fetcher.loadBlocks(layer, [0, 1]);
  const report = await recorder.done;
  const docBlock = doc.extents![1]!.block;
  const libcBlock = libc.extents![0]!.block;
  assert.deepEqual(report.ranges, [
    { layer: 0, first: docBlock, count: 1 },
    { layer: 0, first: libcBlock, count: 1 },
  ]);
  // later reads are not recorded
  await fetcher.read(layer, doc, 300_000, 10);
  assert.equal(recorder.reads, 3);
  fetcher.close();
});
