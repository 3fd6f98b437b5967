import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import {
  BlockFetcher,
  BufferRangeReader,
  ErrorCode,
  PrefetchRecorder,
  PrefetchReplay,
  PrefetchWarmupPlan,
  MAX_PREFETCH_ABSENT_PATHS,
  MAX_PREFETCH_LOOKED_PATHS,
  absentPathsByLayer,
  lookedPathsByLayer,
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
  assert.deepEqual(report.files, [
    { layer: 0, path: 'usr/share/doc/big', offset: 70_000, length: 10 },
    { layer: 0, path: 'usr/lib/libc.so', offset: 0, length: 10 },
  ]);
  // later reads are not recorded
  await fetcher.read(layer, doc, 300_000, 10);
  assert.equal(recorder.reads, 3);
  fetcher.close();
});

test('prefetch report files: reads joined per file (also out of order) in first-read order, round-trip, validation; old reports without files still parse', async () => {
  const { index } = await landmarkLayer();
  const layer = reportLayerOf(index);
  const d = index.layerDigest;
  const fileReads = [
    { layer: d, path: 'usr/bin/python', offset: 0, length: 4096 },
    { layer: d, path: 'usr/lib/libc.so', offset: 8192, length: 100 },
    { layer: d, path: 'usr/bin/python', offset: 4096, length: 4096 }, // adjacent: joined
    { layer: d, path: 'usr/bin/python', offset: 100, length: 10 }, // inside: joined
    { layer: d, path: 'usr/lib/libc.so', offset: 0, length: 100 }, // not touching: a new range
    { layer: d, path: 'usr/share/doc/big', offset: 0, length: 16384 },
    { layer: d, path: 'usr/share/doc/big', offset: 49152, length: 49152 }, // read-ahead landing first
    { layer: d, path: 'usr/share/doc/big', offset: 16384, length: 32768 }, // bridges both
    { layer: sha256Digest('other') as Digest, path: 'x', offset: 0, length: 1 },
  ];
  const report = buildPrefetchReport(manifest, [layer], [{ layer: d, block: 0 }], new Date(0), fileReads);
  assert.deepEqual(report.files, [
    { layer: 0, path: 'usr/bin/python', offset: 0, length: 8192 },
    { layer: 0, path: 'usr/lib/libc.so', offset: 8192, length: 100 },
    { layer: 0, path: 'usr/lib/libc.so', offset: 0, length: 100 },
    { layer: 0, path: 'usr/share/doc/big', offset: 0, length: 98304 },
  ]);
  const bytes = serialisePrefetchReport(report);
  assert.deepEqual(parsePrefetchReport(bytes), report);
  const edit = (files: unknown) => {
    const j = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
    j.files = files;
    return new TextEncoder().encode(JSON.stringify(j));
  };
  assert.throws(() => parsePrefetchReport(edit([[0, '../etc/passwd', 0, 1]])), invalid(/file 0: bad path/));
  assert.throws(() => parsePrefetchReport(edit([[0, '/abs', 0, 1]])), invalid(/bad path/));
  assert.throws(() => parsePrefetchReport(edit([[0, 'a', 0, 0]])), invalid(/bad range/));
  assert.throws(() => parsePrefetchReport(edit([[3, 'a', 0, 1]])), invalid(/bad layer/));
  assert.throws(() => parsePrefetchReport(edit([[0, 'a', 0]])), invalid(/quadruple/));
  assert.throws(() => parsePrefetchReport(edit({})), invalid(/files must be an array/));
  // a report written before files existed
  const old = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
  delete old.files;
  assert.equal(parsePrefetchReport(new TextEncoder().encode(JSON.stringify(old))).files, undefined);
});

test('warm-up plan: a file range comes out once every block it lies in is loaded, in report order; ranges with unfetched blocks never', async () => {
  const { index } = await landmarkLayer();
  const d = index.layerDigest;
  const python = index.entries.get('usr/bin/python')!;
  const libc = index.entries.get('usr/lib/libc.so')!;
  const big = index.entries.get('usr/share/doc/big')!;
  const blocksOf = (e: typeof python, offset: number, length: number) =>
    [...new Set(e.extents!.filter((x) => x.fileOffset < offset + length && x.fileOffset + x.length > offset).map((x) => x.block))];
  const pyBlocks = blocksOf(python, 0, 150_000);
  assert.ok(pyBlocks.length >= 2, 'the python range spans several blocks');
  const libcBlocks = blocksOf(libc, 0, 10);
  const bigBlocks = blocksOf(big, 0, 10);
  const report = buildPrefetchReport(manifest, [reportLayerOf(index)], [], new Date(0), [
    { layer: d, path: 'usr/bin/python', offset: 0, length: 150_000 },
    { layer: d, path: 'usr/lib/libc.so', offset: 0, length: 10 },
    { layer: d, path: 'usr/share/doc/big', offset: 0, length: 10 },
    { layer: d, path: 'usr/gone', offset: 0, length: 10 },
  ]);
  const fetched = new Set([...pyBlocks, ...libcBlocks]); // big's block is over the budget
  const plan = new PrefetchWarmupPlan(report, new Map([[d, index]]), (digest, b) => digest === d && fetched.has(b));
  assert.equal(plan.pending, 2);
  assert.deepEqual(plan.loaded(d, libcBlocks), [{ path: 'usr/lib/libc.so', offset: 0, length: 10 }]);
  assert.deepEqual(plan.loaded(d, pyBlocks.slice(0, 1)), [], 'python waits for its other blocks');
  assert.deepEqual(plan.loaded(d, [...pyBlocks, ...bigBlocks]), [{ path: 'usr/bin/python', offset: 0, length: 150_000 }]);
  assert.deepEqual(plan.loaded(d, pyBlocks), [], 'handed out once');
  assert.equal(plan.pending, 0);
});

test('replay: one abort listener on the caller\'s signal (no MaxListeners warning for many blocks in flight), removed when done; aborting stops it', async () => {
  const { blob, index } = await landmarkLayer();
  const all = { ...landmarkPrefetchReport(manifest, [index])!, ranges: [{ layer: 0, first: 0, count: index.blocks.length }] };
  assert.ok(index.blocks.length > 10, `${index.blocks.length} blocks: more than the default 10 listeners`);
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.name);
  process.on('warning', onWarning);
  try {
    const outer = new AbortController();
    const fetcher = new BlockFetcher({ readAheadBytes: 0 });
    const layers = new Map([[index.layerDigest, { index, reader: new BufferRangeReader(blob) }]]);
    const replay = new PrefetchReplay({ fetcher, report: all, layers, signal: outer.signal, batchBytes: 64 << 20 });
    assert.equal(getEventListeners(outer.signal, 'abort').length, 1);
    assert.equal((await replay.done).blocks, index.blocks.length);
    assert.equal(getEventListeners(outer.signal, 'abort').length, 0);
    await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
    assert.deepEqual(warnings, []);
    fetcher.close();

    // aborted before it starts: nothing is fetched
    const gone = new AbortController();
    gone.abort(new Error('closing'));
    const fetcher2 = new BlockFetcher({ readAheadBytes: 0 });
    const fetches: FetchEvent[] = [];
    fetcher2.on('fetch', (e) => fetches.push(e));
    const stopped = await new PrefetchReplay({ fetcher: fetcher2, report: all, layers, signal: gone.signal }).done;
    assert.equal(stopped.blocks, 0);
    assert.equal(fetches.length, 0);
    fetcher2.close();
  } finally {
    process.off('warning', onWarning);
  }
});

test('replay: the first batch goes alone; the other batches start once it has settled, several at once', async () => {
  const { blob, index } = await landmarkLayer();
  const all = { ...landmarkPrefetchReport(manifest, [index])!, ranges: [{ layer: 0, first: 0, count: index.blocks.length }] };
  const inner = new BufferRangeReader(blob);
  const started: number[] = [];
  let releaseFirst!: () => void;
  const firstGate = new Promise<void>((resolve) => (releaseFirst = resolve));
  let inFlight = 0;
  let maxInFlight = 0;
  const reader = {
    get size() {
      return inner.size;
    },
    async readRange(offset: number, length: number, options: { signal?: AbortSignal } = {}) {
      started.push(offset);
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        if (started.length === 1) await firstGate;
        else await new Promise((r) => setTimeout(r, 5));
        return await inner.readRange(offset, length, options);
      } finally {
        inFlight--;
      }
    },
  };
  const fetcher = new BlockFetcher({ readAheadBytes: 0 });
  try {
    const layers = new Map([[index.layerDigest, { index, reader }]]);
    // small batches (64 KiB), no gap filling: about one range request per batch
    const replay = new PrefetchReplay({ fetcher, report: all, layers, batchBytes: 65536, maxGapBytes: 0, parallelBatches: 4 });
    let firstSettled = false;
    void replay.firstBatch.then(() => (firstSettled = true));
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(started, [index.blocks[0]!.compressedOffset], 'only the first batch is fetched while it is in flight');
    assert.equal(firstSettled, false);
    releaseFirst();
    const result = await replay.done;
    assert.equal(firstSettled, true);
    assert.equal(result.blocks, index.blocks.length);
    assert.ok(started.length > 4, `${started.length} range requests`);
    assert.ok(maxInFlight > 1 && maxInFlight <= 4, `then up to 4 batches at once (saw ${maxInFlight})`);
  } finally {
    fetcher.close();
  }
});

test('prefetch report absent paths: first lookups in order, bounded, round-trip, validation; the recorder keeps paths its layers lack; the replay skips paths the index has', async () => {
  const { blob, index } = await landmarkLayer();
  const d = index.layerDigest;
  const other = sha256Digest('other') as Digest;
  const lookups = [
    { layer: d, path: 'usr/lib/python3/os.py' },
    { layer: d, path: 'usr/bin/node' },
    { layer: d, path: 'usr/lib/python3/os.py' }, // repeat
    { layer: other, path: 'x' }, // not a layer of the report
    { layer: d, path: '../escape' }, // not a path in a layer
    { layer: d, path: 'usr/bin/python' }, // present: a replay does not look it up
  ];
  const report = buildPrefetchReport(manifest, [reportLayerOf(index)], [{ layer: d, block: 0 }], new Date(0), undefined, lookups);
  assert.deepEqual(report.absent, [
    { layer: 0, path: 'usr/lib/python3/os.py' },
    { layer: 0, path: 'usr/bin/node' },
    { layer: 0, path: 'usr/bin/python' },
  ]);
  const bytes = serialisePrefetchReport(report);
  assert.deepEqual(parsePrefetchReport(bytes), report);
  assert.deepEqual([...absentPathsByLayer(report, new Map([[d, index]]))], [[d, ['usr/lib/python3/os.py', 'usr/bin/node']]]);
  const edit = (absent: unknown) => {
    const j = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
    j.absent = absent;
    return new TextEncoder().encode(JSON.stringify(j));
  };
  assert.throws(() => parsePrefetchReport(edit([[0, 'a/../b']])), invalid(/absent 0: bad path/));
  assert.throws(() => parsePrefetchReport(edit([[1, 'a']])), invalid(/absent 0: bad layer/));
  assert.throws(() => parsePrefetchReport(edit([[0, 'a'], [0, 'a']])), invalid(/absent 1: listed twice/));
  assert.throws(() => parsePrefetchReport(edit([[0, 'a', 1]])), invalid(/pair/));
  assert.throws(() => parsePrefetchReport(edit('a')), invalid(/absent must be an array/));
  assert.throws(() => parsePrefetchReport(edit(Array.from({ length: MAX_PREFETCH_ABSENT_PATHS + 1 }, (_, i) => [0, `p${i}`]))), invalid(/at most/));
  // reports without absent paths (recorded before they existed, or none looked up)
  assert.equal(buildPrefetchReport(manifest, [reportLayerOf(index)], [{ layer: d, block: 0 }], new Date(0), undefined, []).absent, undefined);
  assert.equal(parsePrefetchReport(edit(undefined)).absent, undefined);
  // the bound: the first MAX_PREFETCH_ABSENT_PATHS are kept
  const many = Array.from({ length: MAX_PREFETCH_ABSENT_PATHS + 5 }, (_, i) => ({ layer: d, path: `m/${i}` }));
  const bounded = buildPrefetchReport(manifest, [reportLayerOf(index)], [], new Date(0), undefined, many);
  assert.equal(bounded.absent?.length, MAX_PREFETCH_ABSENT_PATHS);
  assert.equal(bounded.absent?.[0]?.path, 'm/0');

  // the recorder: lookups of its layers' missing paths, once each, until it stops
  const fetcher = new BlockFetcher();
  const recorder = new PrefetchRecorder({ fetcher, manifestDigest: manifest, layers: [index], quietMs: 100, recordMaxMs: 10_000 });
  recorder.noteAbsent(d, 'usr/lib/node_modules');
  recorder.noteAbsent(d, 'usr/bin/python'); // the layer has it
  recorder.noteAbsent(other, 'usr/x');
  recorder.noteAbsent(d, 'usr/lib/node_modules');
  await fetcher.read({ index, reader: new BufferRangeReader(blob) }, index.entries.get('usr/lib/libc.so')!, 0, 10);
  recorder.noteAbsent(d, 'etc/hosts');
  const recorded = await recorder.done;
  recorder.noteAbsent(d, 'after/stop');
  assert.deepEqual(recorded.absent, [
    { layer: 0, path: 'usr/lib/node_modules' },
    { layer: 0, path: 'etc/hosts' },
  ]);
  fetcher.close();
});

test('prefetch report looked-up paths: paths found and not read, first lookups in order, bounded, round-trip, validation; the recorder keeps paths its layers have; the replay skips paths the index lacks', async () => {
  const { blob, index } = await landmarkLayer();
  const d = index.layerDigest;
  const other = sha256Digest('other') as Digest;
  const lookups = [
    { layer: d, path: 'usr/bin/python' },
    { layer: d, path: 'usr/lib' },
    { layer: d, path: 'usr/bin/python' }, // repeat
    { layer: d, path: 'usr/lib/libc.so' }, // read: its reads warm it
    { layer: other, path: 'x' }, // not a layer of the report
    { layer: d, path: 'usr/../x' }, // not a path in a layer
    { layer: d, path: 'usr/gone' }, // not in the index (a report that says so is wrong about it)
  ];
  const reads = [{ layer: d, path: 'usr/lib/libc.so', offset: 0, length: 10 }];
  const report = buildPrefetchReport(manifest, [reportLayerOf(index)], [{ layer: d, block: 0 }], new Date(0), reads, [{ layer: d, path: 'etc/nope' }], lookups);
  assert.deepEqual(report.looked, [
    { layer: 0, path: 'usr/bin/python' },
    { layer: 0, path: 'usr/lib' },
    { layer: 0, path: 'usr/gone' },
  ]);
  assert.deepEqual(report.absent, [{ layer: 0, path: 'etc/nope' }], 'beside the absent paths');
  const bytes = serialisePrefetchReport(report);
  assert.deepEqual(parsePrefetchReport(bytes), report);
  assert.deepEqual([...lookedPathsByLayer(report, new Map([[d, index]]))], [[d, ['usr/bin/python', 'usr/lib']]]);
  assert.deepEqual([...lookedPathsByLayer(report, new Map())], [], 'layers without an index: nothing');
  const edit = (looked: unknown) => {
    const j = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
    j.looked = looked;
    return new TextEncoder().encode(JSON.stringify(j));
  };
  assert.throws(() => parsePrefetchReport(edit([[0, '/abs']])), invalid(/looked 0: bad path/));
  assert.throws(() => parsePrefetchReport(edit([[0, 'a'], [3, 'b']])), invalid(/looked 1: bad layer/));
  assert.throws(() => parsePrefetchReport(edit([[0, 'a'], [0, 'a']])), invalid(/looked 1: listed twice/));
  assert.throws(() => parsePrefetchReport(edit({})), invalid(/looked must be an array/));
  assert.throws(() => parsePrefetchReport(edit(Array.from({ length: MAX_PREFETCH_LOOKED_PATHS + 1 }, (_, i) => [0, `p${i}`]))), invalid(/at most/));
  assert.equal(parsePrefetchReport(edit(undefined)).looked, undefined, 'reports recorded before it existed');
  assert.equal(buildPrefetchReport(manifest, [reportLayerOf(index)], [], new Date(0), reads, undefined, [{ layer: d, path: 'usr/lib/libc.so' }]).looked, undefined, 'only read paths: none');
  const many = Array.from({ length: MAX_PREFETCH_LOOKED_PATHS + 5 }, (_, i) => ({ layer: d, path: `m/${i}` }));
  const bounded = buildPrefetchReport(manifest, [reportLayerOf(index)], [], new Date(0), undefined, undefined, many);
  assert.equal(bounded.looked?.length, MAX_PREFETCH_LOOKED_PATHS);
  assert.equal(bounded.looked?.[0]?.path, 'm/0');

  // the recorder: lookups of paths its layers have, once each, until it stops; not those it read
  const fetcher = new BlockFetcher();
  const recorder = new PrefetchRecorder({ fetcher, manifestDigest: manifest, layers: [index], quietMs: 100, recordMaxMs: 10_000 });
  recorder.noteLookup(d, 'usr/bin/python');
  recorder.noteLookup(d, 'usr/lib/node_modules'); // the layer lacks it
  recorder.noteLookup(other, 'usr/bin/python');
  recorder.noteLookup(d, 'usr/bin/python');
  recorder.noteLookup(d, 'usr/lib/libc.so');
  await fetcher.read({ index, reader: new BufferRangeReader(blob) }, index.entries.get('usr/lib/libc.so')!, 0, 10);
  recorder.noteLookup(d, 'usr/share/doc/big');
  const recorded = await recorder.done;
  recorder.noteLookup(d, 'usr/lib');
  assert.deepEqual(recorded.looked, [
    { layer: 0, path: 'usr/bin/python' },
    { layer: 0, path: 'usr/share/doc/big' },
  ]);
  fetcher.close();
});
