import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockFetcher, buildRawIndex, ContentCache, ErrorCode, FetchScheduler, ImgstreamError, LayerCache, LayerDownloader, type FetchEvent, type FetchTicket, type FileEntry, type LayerIndex } from '@imgstream/core';
import { buildTar, chunked, pseudoRandom, type TarEntrySpec } from '../../../test/helpers/tar-builder.ts';
import { httpRangeReader, startRangeServer, type RecordedRequest } from '../../../test/helpers/range-server.ts';
import { tempDir } from '../../../test/helpers/tmp.ts';

const BLOCK = 64 * 1024;

interface LayerFile {
  path: string;
  content: Uint8Array;
}

/** An uncompressed layer of files in three directories, with core's raw index cut into BLOCK-sized blocks. */
async function makeLayer(seed = 1): Promise<{ files: LayerFile[]; tar: Buffer; index: LayerIndex }> {
  const sizes = [0, 1, 511, 512, 513, 4096, 65535, 65536, 65537, 200_000, 300_000, 2 * 1024 * 1024 + 123, 5000, 777_777, 12, 100_000];
  const files = sizes.map((size, i) => ({ path: `d${i % 3}/f${i}.bin`, content: pseudoRandom(size, seed * 1000 + i + 1) }));
  const entries: TarEntrySpec[] = [];
  const dirs = new Set<string>();
  for (const f of files) {
    const dir = f.path.slice(0, f.path.indexOf('/'));
    if (!dirs.has(dir)) entries.push({ type: 'dir', name: `${dir}/` });
    dirs.add(dir);
    entries.push({ type: 'file', name: f.path, content: f.content });
  }
  const tar = Buffer.from(buildTar(entries));
  return { files, tar, index: await buildRawIndex(chunked(tar, 1 << 20), { spanBytes: BLOCK }) };
}

function file(index: LayerIndex, path: string): FileEntry {
  const e = index.entries.get(path);
  assert.ok(e, path);
  return e;
}

/** Blocks each request covered, given the index's fixed block size. */
function blocksOf(r: RecordedRequest): number[] {
  const out: number[] = [];
  for (let b = Math.floor(r.start / BLOCK); b * BLOCK <= r.end; b++) out.push(b);
  return out;
}

function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x / 0x7fffffff;
  };
}

test('random concurrent reads equal ground truth while a background download races them, and after it completes; each block crosses the network once', async (t) => {
  const { files, tar, index } = await makeLayer();
  const fetchServer = await startRangeServer(t, tar);
  const downloadServer = await startRangeServer(t, tar, { bytesPerSecond: 4 * 1024 * 1024 });
  const layerCache = new LayerCache({ layerCacheDir: await tempDir(t) });
  await layerCache.ready();
  const scheduler = new FetchScheduler({ maxConcurrentFetches: 6 });
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 * 1024 * 1024, scheduler, layerCache, readAheadBytes: 128 * 1024 });
  t.after(() => fetcher.close());
  const downloader = new LayerDownloader({ layerCache, scheduler, downloadChunkBytes: 256 * 1024 });
  t.after(() => downloader.close());
  const layer = { index, reader: httpRangeReader(fetchServer.url, tar.byteLength) };
  let localReads = 0;
  let remoteReads = 0;
  fetcher.on('read', (e) => (e.local ? localReads++ : remoteReads++));
  let completeEvents = 0;
  layerCache.on('complete', ({ digest }) => {
    assert.equal(digest, index.layerDigest);
    completeEvents++;
  });

  const download = downloader.download({ digest: index.layerDigest, size: tar.byteLength, source: httpRangeReader(downloadServer.url, tar.byteLength) });
  const rand = rng(42);
  let verified = 0;
  let nonEmpty = 0;
  const readRandom = async (): Promise<void> => {
    const f = files[Math.floor(rand() * files.length)]!;
    const offset = Math.floor(rand() * (f.content.byteLength + 10));
    const length = Math.floor(rand() * 300_000);
    const got = await fetcher.read(layer, file(index, f.path), offset, length);
    const want = f.content.subarray(Math.min(offset, f.content.byteLength), Math.min(f.content.byteLength, offset + length));
    assert.equal(Buffer.compare(Buffer.from(got), Buffer.from(want)), 0, `${f.path} @${offset}+${length}`);
    verified++;
    if (want.byteLength > 0) nonEmpty++;
  };
  let downloaded = false;
  void download.then(
    () => (downloaded = true),
    () => (downloaded = true),
  );
  while (!downloaded) {
    await Promise.all(Array.from({ length: 8 }, readRandom));
    await new Promise(setImmediate); // cache hits resolve in microtasks: let I/O run
  }
  const dir = await download;
  assert.equal(dir, layerCache.dirOf(index.layerDigest));
  assert.equal(completeEvents, 1);
  assert.ok(remoteReads > 0, 'some reads were streamed before the download completed');
  // every block crossed the fetcher's network path at most once
  const seen = new Map<number, number>();
  for (const r of fetchServer.requests) for (const b of blocksOf(r)) seen.set(b, (seen.get(b) ?? 0) + 1);
  for (const [b, n] of seen) assert.equal(n, 1, `block ${b} fetched ${n} times`);
  const requestsBefore = fetchServer.requests.length;
  const remoteBefore = remoteReads;
  const localBefore = localReads;
  const nonEmptyBefore = nonEmpty;
  await Promise.all(Array.from({ length: 40 }, readRandom));
  assert.equal(fetchServer.requests.length, requestsBefore, 'reads of a complete layer do not touch the network');
  assert.equal(remoteReads, remoteBefore, 'every read after completion is local');
  assert.equal(localReads - localBefore, nonEmpty - nonEmptyBefore, 'every non-empty read was served locally');
  assert.ok(localReads - localBefore > 0);
  assert.equal(fetcher.contentCache.sizeBytes, 0, 'blocks of a local layer leave memory');
  t.diagnostic(`verified ${verified} reads; ${fetchServer.requests.length} fetch requests; ${downloadServer.requests.length} download requests; remote ${remoteReads} local ${localReads}`);
});

test('the content cache never exceeds its byte bound and reads stay correct under eviction', async (t) => {
  const { files, tar, index } = await makeLayer(2);
  const server = await startRangeServer(t, tar);
  const cache = new ContentCache({ maxBytes: 3 * BLOCK + 100 });
  const fetcher = new BlockFetcher({ contentCache: cache, maxReadBlocks: 2, readAheadBytes: 256 * 1024 });
  t.after(() => fetcher.close());
  const layer = { index, reader: httpRangeReader(server.url, tar.byteLength) };
  let maxSeen = 0;
  fetcher.on('fetch', () => (maxSeen = Math.max(maxSeen, cache.sizeBytes)));
  const rand = rng(7);
  for (let round = 0; round < 30; round++) {
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        const f = files[Math.floor(rand() * files.length)]!;
        const offset = Math.floor(rand() * f.content.byteLength);
        const length = 1 + Math.floor(rand() * 200_000);
        const got = await fetcher.read(layer, file(index, f.path), offset, length);
        assert.deepEqual(Buffer.from(got), Buffer.from(f.content.subarray(offset, offset + length)));
        assert.ok(cache.sizeBytes <= cache.maxBytes);
      }),
    );
    maxSeen = Math.max(maxSeen, cache.sizeBytes);
  }
  assert.ok(maxSeen <= cache.maxBytes, `cache held ${maxSeen} > ${cache.maxBytes}`);
  assert.ok(maxSeen >= 2 * BLOCK, 'the cache was used');
  assert.throws(() => new ContentCache({} as never), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.INVALID_OPTION);
  assert.throws(() => new ContentCache({ maxBytes: 0 }), /maxBytes/);
});

test('adjacent blocks are coalesced into one request of at most maxReadBlocks blocks; larger reads take rounds', async (t) => {
  const { files, tar, index } = await makeLayer(3);
  const server = await startRangeServer(t, tar);
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 << 20, maxReadBlocks: 2, readAheadBytes: 0, layerReadAheadBytes: 0, layerReadBehindBytes: 0 });
  t.after(() => fetcher.close());
  const big = files[11]!; // 2 MiB + 123
  const fetches: FetchEvent[] = [];
  fetcher.on('fetch', (e) => fetches.push(e));
  const got = await fetcher.read({ index, reader: httpRangeReader(server.url, tar.byteLength) }, file(index, big.path), 100_000, 1_000_000);
  assert.deepEqual(Buffer.from(got), Buffer.from(big.content.subarray(100_000, 1_100_000)));
  const touched = new Set(file(index, big.path).extents!.filter((e) => e.fileOffset + e.length > 100_000 && e.fileOffset < 1_100_000).map((e) => e.block));
  assert.equal(server.requests.length, Math.ceil(touched.size / 2));
  for (const r of server.requests) assert.ok(blocksOf(r).length <= 2, `request of ${blocksOf(r).length} blocks`);
  assert.ok(server.requests.filter((r) => blocksOf(r).length === 2).length >= touched.size / 2 - 1, 'adjacent blocks share a request');
  assert.equal(fetches.length, server.requests.length);
  assert.ok(fetches.every((f) => f.priority === 'foreground' && f.bytes > 0 && f.latencyMs >= 0));
});

test('read-ahead follows sequential reads up to readAheadBytes and stays off for random reads', async (t) => {
  const { files, tar, index } = await makeLayer(4);
  const big = files[11]!;
  const entry = file(index, big.path);
  const readAhead = 256 * 1024;
  {
    const server = await startRangeServer(t, tar);
    const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 << 20, maxReadBlocks: 2, readAheadBytes: readAhead, layerReadAheadBytes: 0, layerReadBehindBytes: 0 });
    t.after(() => fetcher.close());
    const layer = { index, reader: httpRangeReader(server.url, tar.byteLength) };
    let hits = 0;
    fetcher.on('read', (e) => (hits += e.cacheHits));
    const step = 32 * 1024;
    let maxAhead = 0;
    for (let off = 0; off < 1024 * 1024; off += step) {
      const got = await fetcher.read(layer, entry, off, step);
      assert.deepEqual(Buffer.from(got), Buffer.from(big.content.subarray(off, off + step)));
      const dataStart = entry.extents![0]!.block * BLOCK + entry.extents![0]!.blockOffset;
      const furthest = Math.max(...server.requests.map((r) => r.end + 1)) - dataStart;
      maxAhead = Math.max(maxAhead, furthest - (off + step));
    }
    assert.ok(maxAhead > 0, 'bytes beyond the read were fetched');
    assert.ok(maxAhead <= readAhead + BLOCK, `read ahead ${maxAhead} bytes > ${readAhead} + one block`);
    assert.ok(hits > 10, `sequential reads hit the read-ahead blocks (${hits})`);
  }
  {
    const server = await startRangeServer(t, tar);
    const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 << 20, readAheadBytes: readAhead, layerReadAheadBytes: 0, layerReadBehindBytes: 0 });
    t.after(() => fetcher.close());
    const layer = { index, reader: httpRangeReader(server.url, tar.byteLength) };
    const rand = rng(9);
    const touched = new Set<number>();
    for (let i = 0; i < 20; i++) {
      const off = 1 + Math.floor(rand() * (big.content.byteLength - 5000));
      await fetcher.read(layer, entry, off, 4096);
      for (const e of entry.extents!) if (e.fileOffset + e.length > off && e.fileOffset < off + 4096) touched.add(e.block);
    }
    const fetched = new Set(server.requests.flatMap(blocksOf));
    assert.deepEqual([...fetched].sort((a, b) => a - b), [...touched].sort((a, b) => a - b), 'random reads fetch only the blocks they touch');
  }
});

test('concurrent readers of one block share one request; an aborting reader does not cancel the others; holes read as zeros', async (t) => {
  const { files, tar, index } = await makeLayer(5);
  const server = await startRangeServer(t, tar, { delayMs: 100 });
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 << 20, readAheadBytes: 0 });
  t.after(() => fetcher.close());
  const layer = { index, reader: httpRangeReader(server.url, tar.byteLength) };
  const f = files[9]!;
  const entry = file(index, f.path);
  const quitter = new AbortController();
  const reason = new Error('reader went away');
  const quitting = fetcher.read(layer, entry, 0, 1000, { signal: quitter.signal });
  const readers = Array.from({ length: 20 }, () => fetcher.read(layer, entry, 0, 1000));
  setTimeout(() => quitter.abort(reason), 20);
  await assert.rejects(quitting, (e) => e === reason);
  for (const got of await Promise.all(readers)) assert.deepEqual(Buffer.from(got), Buffer.from(f.content.subarray(0, 1000)));
  assert.equal(server.requests.length, 1);

  // a lone reader that aborts cancels the shared fetch, and a later read works
  const lone = new AbortController();
  const p = fetcher.read(layer, file(index, files[10]!.path), 0, 10, { signal: lone.signal });
  setTimeout(() => lone.abort(reason), 20);
  await assert.rejects(p, (e) => e === reason);
  for (let i = 0; i < 100 && fetcher.inflightFetches > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(fetcher.inflightFetches, 0, 'the unwanted fetch was cancelled');
  const again = await fetcher.read(layer, file(index, files[10]!.path), 0, 10);
  assert.deepEqual(Buffer.from(again), Buffer.from(files[10]!.content.subarray(0, 10)));

  // a sparse file: extents only at 5000..5100
  const e0 = entry.extents![0]!;
  const sparse = { size: 10_000, extents: [{ fileOffset: 5000, length: 100, block: e0.block, blockOffset: e0.blockOffset }] };
  const got = await fetcher.read(layer, sparse, 4990, 200);
  assert.equal(got.byteLength, 200);
  assert.ok(got.subarray(0, 10).every((b) => b === 0));
  assert.deepEqual(Buffer.from(got.subarray(10, 110)), Buffer.from(f.content.subarray(0, 100)));
  assert.ok(got.subarray(110).every((b) => b === 0));
});

test('registry faults mid-block are retried; persistent faults, timeouts and corrupt blocks fail with codes and cache nothing', async (t) => {
  const { files, tar, index } = await makeLayer(6);
  const f = files[10]!;
  {
    const server = await startRangeServer(t, tar, { fault: (_r, n) => (n === 1 ? 'reset' : n === 2 ? 'error' : undefined) });
    const fetcher = new BlockFetcher({ maxContentCacheBytes: 1 << 24, readAheadBytes: 0, retryBaseDelayMs: 1 });
    t.after(() => fetcher.close());
    const errors: FetchEvent[] = [];
    fetcher.on('fetch', (e) => e.error && errors.push(e));
    const got = await fetcher.read({ index, reader: httpRangeReader(server.url, tar.byteLength) }, file(index, f.path), 0, 5000);
    assert.deepEqual(Buffer.from(got), Buffer.from(f.content.subarray(0, 5000)));
    assert.equal(server.requests.length, 3);
    assert.equal(errors.length, 2);
  }
  {
    const server = await startRangeServer(t, tar, { fault: () => 'error' });
    const fetcher = new BlockFetcher({ maxContentCacheBytes: 1 << 24, readAheadBytes: 0, retryBaseDelayMs: 1, fetchRetries: 2 });
    t.after(() => fetcher.close());
    await assert.rejects(fetcher.read({ index, reader: httpRangeReader(server.url, tar.byteLength) }, file(index, f.path), 0, 10), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.REGISTRY_UNAVAILABLE);
    assert.equal(server.requests.length, 3);
  }
  {
    const server = await startRangeServer(t, tar, { delayMs: 1000 });
    const fetcher = new BlockFetcher({ maxContentCacheBytes: 1 << 24, readAheadBytes: 0, fetchRetries: 0, fetchTimeoutMs: 50 });
    t.after(() => fetcher.close());
    await assert.rejects(fetcher.read({ index, reader: httpRangeReader(server.url, tar.byteLength) }, file(index, f.path), 0, 10), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.TIMEOUT);
  }
  {
    const corrupt = Buffer.from(tar);
    corrupt.fill(0x55);
    const server = await startRangeServer(t, corrupt);
    const fetcher = new BlockFetcher({ maxContentCacheBytes: 1 << 24, readAheadBytes: 0, fetchRetries: 1, retryBaseDelayMs: 1 });
    t.after(() => fetcher.close());
    await assert.rejects(fetcher.read({ index, reader: httpRangeReader(server.url, tar.byteLength) }, file(index, f.path), 0, 10), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.DIGEST_MISMATCH);
    assert.equal(fetcher.contentCache.blockCount, 0, 'unverified bytes never enter the cache');
    fetcher.close();
    await assert.rejects(fetcher.read({ index, reader: httpRangeReader(server.url, tar.byteLength) }, file(index, f.path), 0, 10), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.CLOSED);
  }
});

test('foreground requests are scheduled before prefetch and background ones', async () => {
  const s = new FetchScheduler({ maxConcurrentFetches: 1 });
  const order: string[] = [];
  let release!: () => void;
  const blocker = s.run('foreground', () => new Promise<void>((r) => (release = r)));
  const tasks = [
    s.run('background', async () => void order.push('background')),
    s.run('prefetch', async () => void order.push('prefetch')),
    s.run('foreground', async () => void order.push('foreground')),
  ];
  await new Promise(setImmediate);
  release();
  await blocker;
  await Promise.all(tasks);
  assert.deepEqual(order, ['foreground', 'prefetch', 'background']);
  const ac = new AbortController();
  let release2!: () => void;
  const blocker2 = s.run('foreground', () => new Promise<void>((r) => (release2 = r)));
  const queued = s.run('prefetch', async () => 1, ac.signal);
  await new Promise(setImmediate);
  ac.abort(new Error('gone'));
  await assert.rejects(queued, /gone/);
  await new Promise(setImmediate);
  release2();
  await blocker2;
  assert.equal(s.running, 0);

  // a queued background request whose ticket is raised runs before queued prefetch work
  const order2: string[] = [];
  let release3!: () => void;
  const blocker3 = s.run('foreground', () => new Promise<void>((r) => (release3 = r)));
  const ticket: FetchTicket = { priority: 'background' };
  const raised = s.run(ticket, async () => void order2.push('raised'));
  const pre = s.run('prefetch', async () => void order2.push('prefetch'));
  await new Promise(setImmediate);
  assert.ok(ticket.raise);
  ticket.raise('foreground');
  await new Promise(setImmediate);
  release3();
  await Promise.all([blocker3, raised, pre]);
  assert.deepEqual(order2, ['raised', 'prefetch']);
});

test('a foreground read joining queued read-ahead raises its priority', async (t) => {
  const { files, tar, index } = await makeLayer(8);
  const server = await startRangeServer(t, tar);
  const scheduler = new FetchScheduler({ maxConcurrentFetches: 1 });
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 << 20, readAheadBytes: 1 << 20, scheduler });
  t.after(() => fetcher.close());
  const layer = { index, reader: httpRangeReader(server.url, tar.byteLength) };
  const big = file(index, files[11]!.path);
  const other = file(index, files[13]!.path);
  await fetcher.loadBlocks(layer, [big.extents![0]!.block]); // the first read below is a cache hit
  const fetches: FetchEvent[] = [];
  fetcher.on('fetch', (e) => fetches.push(e));
  let unblock!: () => void;
  const blocker = scheduler.run('foreground', () => new Promise<void>((r) => (unblock = r)));
  await new Promise(setImmediate);
  const p = fetcher.loadBlocks(layer, [other.extents![0]!.block]); // queued prefetch P
  await fetcher.read(layer, big, 0, 1000); // hit; queues read-ahead R behind P
  const waiting = fetcher.read(layer, big, 600_000, 1000); // joins R: R jumps ahead of P
  await new Promise(setImmediate);
  unblock();
  await blocker;
  const got = await waiting;
  await p;
  assert.deepEqual(Buffer.from(got), Buffer.from(files[11]!.content.subarray(600_000, 601_000)));
  assert.equal(fetches.length, 2);
  assert.equal(fetches[0]!.priority, 'foreground');
  assert.ok(fetches[0]!.blockCount > 1, 'the first request was the read-ahead run');
  assert.equal(fetches[1]!.firstBlock, other.extents![0]!.block);
});

test('local reads of a complete layer never leave its directory', async (t) => {
  const { files, tar, index } = await makeLayer(9);
  const server = await startRangeServer(t, tar);
  const layerCache = new LayerCache({ layerCacheDir: await tempDir(t) });
  const staging = await layerCache.createStaging(index.layerDigest);
  const { mkdir, symlink, writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  await mkdir(join(staging, 'd0'));
  await writeFile(join(staging, 'd0', 'f0.bin'), 'local!');
  await symlink('/etc', join(staging, 'esc'));
  await layerCache.commit(staging, { digest: index.layerDigest, sizeBytes: tar.byteLength, completedAtMs: 0 });
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 1 << 20, layerCache });
  t.after(() => fetcher.close());
  const layer = { index, reader: httpRangeReader(server.url, tar.byteLength) };
  const got = await fetcher.read(layer, { size: 6, path: 'd0/f0.bin', extents: file(index, files[0]!.path).extents }, 0, 6);
  assert.equal(Buffer.from(got).toString(), 'local!');
  for (const path of ['esc/hostname', '../../../etc/hostname']) {
    await assert.rejects(fetcher.read(layer, { size: 5, path, extents: [] }, 0, 5), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.UNSAFE_PATH, path);
  }
  assert.equal(server.requests.length, 0);
});

test('a foreground miss also fetches the blocks around it in the layer (layerReadAheadBytes / layerReadBehindBytes) at prefetch priority; the next file is then a hit', async (t) => {
  const { files, tar, index } = await makeLayer(7);
  const server = await startRangeServer(t, tar);
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 << 20, maxReadBlocks: 2, readAheadBytes: 0, layerReadAheadBytes: 2 * BLOCK, layerReadBehindBytes: BLOCK });
  t.after(() => fetcher.close());
  const layer = { index, reader: httpRangeReader(server.url, tar.byteLength) };
  const fetches: FetchEvent[] = [];
  fetcher.on('fetch', (e) => fetches.push(e));
  // f13 (777_777 bytes) lies in the middle of the layer; read 4 KiB of it
  const mid = file(index, files[13]!.path);
  const touched = mid.extents!.filter((e) => e.fileOffset < 3 * BLOCK + 4096 && e.fileOffset + e.length > 3 * BLOCK).map((e) => e.block);
  const [first, last] = [Math.min(...touched), Math.max(...touched)];
  const got = await fetcher.read(layer, mid, 3 * BLOCK, 4096);
  assert.deepEqual(Buffer.from(got), Buffer.from(files[13]!.content.subarray(3 * BLOCK, 3 * BLOCK + 4096)));
  while (fetcher.inflightFetches > 0) await new Promise((r) => setTimeout(r, 5));
  const around = fetches.filter((f) => f.priority === 'prefetch').flatMap((f) => Array.from({ length: f.blockCount }, (_, i) => f.firstBlock + i));
  assert.deepEqual(around.sort((a, b) => a - b), [first - 1, last + 1, last + 2]);
  assert.ok(fetches.filter((f) => f.priority === 'prefetch').every((f) => f.blockCount <= 2), 'requests of at most maxReadBlocks blocks');
  // reads of those blocks are hits: no new request
  const before = server.requests.length;
  const again = await fetcher.read(layer, mid, 4 * BLOCK, BLOCK);
  assert.deepEqual(Buffer.from(again), Buffer.from(files[13]!.content.subarray(4 * BLOCK, 5 * BLOCK)));
  assert.equal(server.requests.length, before);
  // hits never trigger more read-around
  assert.equal(fetcher.inflightFetches, 0);
  assert.throws(() => new BlockFetcher({ layerReadAheadBytes: -1 }), /layerReadAheadBytes/);
});

test('range-read buffers are reused; blocks that are views of a fetched buffer (raw layers) are never overwritten', async (t) => {
  const { files, tar, index } = await makeLayer(9);
  /** A reader that honours `buffer`, as the registry client does, and counts how often it was given one. */
  let given = 0;
  const reader = {
    size: tar.byteLength,
    async readRange(offset: number, length: number, options: { signal?: AbortSignal; buffer?: Uint8Array } = {}): Promise<Uint8Array> {
      await new Promise((r) => setTimeout(r, 1));
      options.signal?.throwIfAborted();
      const src = tar.subarray(offset, offset + length);
      if (options.buffer === undefined) return Uint8Array.from(src);
      given++;
      options.buffer.set(src);
      return options.buffer.subarray(0, src.byteLength);
    },
  };
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 << 20, readAheadBytes: 0, layerReadAheadBytes: 0, layerReadBehindBytes: 0 });
  t.after(() => fetcher.close());
  const layer = { index, reader };
  // every file twice: the second time from the cache, which must still hold the first fetch's bytes
  for (const round of [0, 1]) {
    for (const f of files) {
      const got = await fetcher.read(layer, file(index, f.path), 0, f.content.byteLength);
      assert.deepEqual(Buffer.from(got), Buffer.from(f.content), `${f.path} round ${round}`);
    }
  }
  assert.ok(given > 0);
});

test('readInto: bytes land in the caller\'s buffer (holes zeroed, short at the end of the file); after an abort the buffer is left alone', async (t) => {
  const { files, tar, index } = await makeLayer(5);
  const server = await startRangeServer(t, tar, { delayMs: 100 });
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 << 20, readAheadBytes: 0, layerReadAheadBytes: 0, layerReadBehindBytes: 0 });
  t.after(() => fetcher.close());
  const layer = { index, reader: httpRangeReader(server.url, tar.byteLength) };
  const f = files.find((x) => x.content.byteLength > 1100)!;
  const entry = file(index, f.path);

  // aborted while its block is on the way: rejects, and the buffer is never written
  const untouched = Buffer.alloc(1000, 0xee);
  const ac = new AbortController();
  const reason = new Error('kernel gave up');
  const aborted = fetcher.readInto(layer, entry, 0, untouched, { signal: ac.signal });
  const other = fetcher.read(layer, entry, 0, 10); // keeps the shared fetch going: the block does arrive
  setTimeout(() => ac.abort(reason), 20);
  await assert.rejects(aborted, (e) => e === reason);
  assert.deepEqual(Buffer.from(await other), Buffer.from(f.content.subarray(0, 10)));
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(untouched.every((b) => b === 0xee));

  const target = Buffer.alloc(1000, 0xee);
  assert.equal(await fetcher.readInto(layer, entry, 10, target), 1000);
  assert.deepEqual(target, Buffer.from(f.content.subarray(10, 1010)));
  // past the end of the file: only what is there; the rest of the buffer is not touched
  const tail = Buffer.alloc(100, 0xee);
  assert.equal(await fetcher.readInto(layer, entry, entry.size - 30, tail), 30);
  assert.deepEqual(tail.subarray(0, 30), Buffer.from(f.content.subarray(entry.size - 30)));
  assert.ok(tail.subarray(30).every((b) => b === 0xee));
  // holes of a sparse file are zeroed in the caller's buffer
  const e0 = entry.extents![0]!;
  const sparse = { size: 10_000, extents: [{ fileOffset: 5000, length: 100, block: e0.block, blockOffset: e0.blockOffset }] };
  const holey = Buffer.alloc(200, 0xee);
  assert.equal(await fetcher.readInto(layer, sparse, 4990, holey), 200);
  assert.ok(holey.subarray(0, 10).every((b) => b === 0) && holey.subarray(110).every((b) => b === 0));
  assert.deepEqual(holey.subarray(10, 110), Buffer.from(f.content.subarray(0, 100)));
});

test('a foreground read answered from pinned ranges counts as start-up activity for the background silence, without a request', async (t) => {
  const { files, tar, index } = await makeLayer(3);
  const server = await startRangeServer(t, tar);
  const scheduler = new FetchScheduler({ maxConcurrentFetches: 2, backgroundSilenceMs: 1000 });
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 8 * 1024 * 1024, scheduler });
  t.after(() => fetcher.close());
  const layer = { index, reader: httpRangeReader(server.url, tar.byteLength) };
  const f = files.find((x) => x.content.byteLength === 300_000)!;
  const range = fetcher.pinned.expect(index.layerDigest, f.path, 0, f.content.byteLength, () => true);
  fetcher.pinned.fill(range, f.content);
  const before = scheduler.lastBusyMs;
  const got = new Uint8Array(4096);
  assert.equal(await fetcher.readInto(layer, file(index, f.path), 8192, got), 4096);
  assert.deepEqual(got, f.content.subarray(8192, 8192 + 4096));
  assert.equal(server.requests.length, 0, 'served from the pinned range');
  assert.ok(scheduler.lastBusyMs > before, 'the read moved the last activity');
  const touched = scheduler.lastBusyMs;
  await fetcher.readInto(layer, file(index, f.path), 0, new Uint8Array(100), { priority: 'prefetch' });
  assert.equal(scheduler.lastBusyMs, touched, 'a prefetch read is not start-up activity');
});
