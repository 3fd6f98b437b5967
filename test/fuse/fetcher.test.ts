// Real FUSE over core's real BlockFetcher (content cache, read-ahead, block verification): file
// bytes of a layer index come through the fetcher from a RangeReader over the layer blob.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { BlockFetcher, ErrorCode, isImgstreamError } from '@imgstream/core';
import type { RangeReader } from '@imgstream/core';
import { fetcherLayerContent } from '@imgstream/fuse';
import { MemoryLayerContent, sha256, writeTar } from '../helpers/memory-layer.js';
import { mountedFs, run, sh } from '../helpers/fuse.js';

/** A RangeReader over bytes in memory that counts the bytes it served (stands in for a registry blob). */
class CountingReader implements RangeReader {
  served = 0;
  failing = false;
  constructor(private readonly blob: Buffer) {}
  get size(): number {
    return this.blob.length;
  }
  readRange(offset: number, length: number): Promise<Uint8Array> {
    if (this.failing) return Promise.reject(Object.assign(new Error('blob unavailable'), { code: 'ECONNRESET' }));
    const bytes = this.blob.subarray(offset, Math.min(this.blob.length, offset + length));
    this.served += bytes.length;
    return Promise.resolve(bytes);
  }
}

it('serves files through core BlockFetcher, fetching only the blocks read', { timeout: 60_000 }, async (t) => {
  const big = randomBytes(3 * 1024 * 1024 + 5);
  const other = randomBytes(2 * 1024 * 1024);
  const tar = writeTar([
    { path: 'a', type: 'file', content: big },
    { path: 'b', type: 'file', content: other },
    { path: 'c', type: 'file', content: 'small' },
  ]);
  // the index comes from the test-only tar reader ('raw' format, 64 KiB blocks)
  const { index } = new MemoryLayerContent(tar);
  const reader = new CountingReader(tar);
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 * 1024 * 1024, fetchRetries: 0, readAheadBytes: 256 * 1024, layerReadAheadBytes: 0, layerReadBehindBytes: 0 });
  t.after(() => fetcher.close());
  const fs = await mountedFs(t, { readTimeoutMs: 5_000 });
  fs.addLayer(index.layerDigest, fetcherLayerContent(fetcher, { index, reader }));
  const root = fs.layerPath(index.layerDigest);

  assert.equal(await sh('cat', [`${root}/c`]), 'small');
  const head = await sh('sh', ['-c', `head -c 100000 ${root}/b | sha256sum`]);
  assert.equal(`sha256:${head.split(' ')[0]}`, sha256(other.subarray(0, 100000)));
  // only part of the 5 MiB blob was fetched so far
  assert.ok(reader.served < 2 * 1024 * 1024, `served ${reader.served} bytes`);
  const sum = await sh('sha256sum', [`${root}/a`]);
  assert.equal(`sha256:${sum.split(' ')[0]}`, sha256(big));

  // a blob that fails: EIO for blocks not cached yet; cached content keeps being served
  reader.failing = true;
  const failed = await run('sh', ['-c', `tail -c 100000 ${root}/b > /dev/null`]);
  assert.match(failed.stderr, /Input\/output error/);
  assert.equal(await sh('cat', [`${root}/c`]), 'small');
});

it('page-cache warm-up: ranges read through the mount by the warmer are then read without a FUSE request', { timeout: 60_000 }, async (t) => {
  const lib = randomBytes(1024 * 1024);
  const tar = writeTar([
    { path: 'usr', type: 'dir' },
    { path: 'usr/lib.so', type: 'file', content: lib },
    { path: 'usr/app.py', type: 'file', content: 'print(1)\n' },
    { path: 'usr/cold', type: 'file', content: randomBytes(300_000) },
  ]);
  const { index } = new MemoryLayerContent(tar);
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 * 1024 * 1024, readAheadBytes: 0, layerReadAheadBytes: 0, layerReadBehindBytes: 0 });
  t.after(() => fetcher.close());
  const fs = await mountedFs(t, { readTimeoutMs: 5_000 });
  fs.addLayer(index.layerDigest, fetcherLayerContent(fetcher, { index, reader: new CountingReader(tar) }));
  const root = fs.layerPath(index.layerDigest);
  const reads: string[] = [];
  fetcher.on('read', (e) => reads.push(`${e.path}@${e.offset}`));

  for (const readers of [0, 1.5, 65]) assert.throws(() => fs.warmPageCache({ readers }), (e) => isImgstreamError(e, ErrorCode.INVALID_OPTION), `readers ${readers}`);
  // 3 readers: the files go to them in turn; lib.so's two pieces are read by one, in order
  const warmer = fs.warmPageCache({ readers: 3 });
  warmer.add(index.layerDigest, [
    { path: 'usr/app.py', offset: 0, length: 9 },
    { path: 'usr/lib.so', offset: 0, length: 400_000 },
    { path: 'usr/missing', offset: 0, length: 10 },
  ]);
  warmer.add(index.layerDigest, [{ path: 'usr/lib.so', offset: 400_000, length: lib.length - 400_000 }]);
  warmer.add(sha256(Buffer.from('not a layer of the mount')), [{ path: 'usr/cold', offset: 0, length: 10 }]);
  const stats = await warmer.end();
  assert.equal(stats.bytes, lib.length + 9);
  assert.equal(stats.errors, 1, 'the missing file is counted, not fatal');
  assert.ok(reads.some((r) => r.startsWith('usr/lib.so@')) && !reads.some((r) => r.startsWith('usr/cold')), reads.join(' '));

  // the warmed files come from the page cache: no read reaches the server
  reads.length = 0;
  assert.equal(await sh('cat', [`${root}/usr/app.py`]), 'print(1)\n');
  const sum = await sh('sha256sum', [`${root}/usr/lib.so`]);
  assert.equal(`sha256:${sum.split(' ')[0]}`, sha256(lib));
  assert.equal(reads.length, 0, reads.join(' '));
  // an unwarmed file still goes through FUSE
  await sh('sh', ['-c', `cat ${root}/usr/cold > /dev/null`]);
  assert.ok(reads.some((r) => r.startsWith('usr/cold@')));

  // close() stops a warm-up in progress
  const slow = fs.warmPageCache();
  slow.add(index.layerDigest, [{ path: 'usr/cold', offset: 0, length: 10 }]);
  await fs.close();
  const stopped = await slow.done;
  assert.ok(stopped.durationMs >= 0);
});

it('pinned ranges (a replayed prefetch pack) are answered at once through the mount, without the blob; other reads go to the fetcher', { timeout: 60_000 }, async (t) => {
  const lib = randomBytes(600 * 1024);
  const other = randomBytes(200 * 1024);
  const tar = writeTar([
    { path: 'lib.so', type: 'file', content: lib },
    { path: 'other.so', type: 'file', content: other },
  ]);
  const { index } = new MemoryLayerContent(tar);
  const reader = new CountingReader(tar);
  const fetcher = new BlockFetcher({ maxContentCacheBytes: 64 * 1024 * 1024, readAheadBytes: 0, layerReadAheadBytes: 0, layerReadBehindBytes: 0 });
  t.after(() => fetcher.close());
  const fs = await mountedFs(t, { readTimeoutMs: 5_000 });
  const content = fetcherLayerContent(fetcher, { index, reader });
  let asyncReads = 0;
  fs.addLayer(index.layerDigest, { ...content, readInto: (...args) => (asyncReads++, content.readInto!(...args)) });
  const root = fs.layerPath(index.layerDigest);
  // lib.so pinned in adjacent pieces of 256 KiB (the kernel's 128 KiB reads fall in one or across two)
  for (let at = 0; at < lib.length; at += 256 * 1024) {
    const end = Math.min(lib.length, at + 256 * 1024);
    fetcher.pinned.fill(fetcher.pinned.expect(index.layerDigest, 'lib.so', at, end - at, () => true), lib.subarray(at, end));
  }
  const sum = await sh('sha256sum', [`${root}/lib.so`]);
  assert.equal(`sha256:${sum.split(' ')[0]}`, sha256(lib));
  assert.equal(reader.served, 0, 'every read was answered from the pinned ranges');
  assert.equal(asyncReads, 0, 'at once (readIntoNow), not through an asynchronous read');
  assert.ok(Number.isFinite(fetcher.scheduler.lastBusyMs), 'pinned reads count as start-up activity');
  const sumOther = await sh('sha256sum', [`${root}/other.so`]);
  assert.equal(`sha256:${sumOther.split(' ')[0]}`, sha256(other));
  assert.ok(reader.served >= other.length, 'a file that is not pinned comes from the blob');
  assert.ok(asyncReads > 0);
});
