// Real FUSE over core's real BlockFetcher (content cache, read-ahead, block verification): file
// bytes of a layer index come through the fetcher from a RangeReader over the layer blob.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { BlockFetcher } from '@imgstream/core';
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
