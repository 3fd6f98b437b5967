import { test } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { gzipSync } from 'node:zlib';
import { BufferRangeReader, ErrorCode, buildRawIndex, buildZranIndex, isImgstreamError, parseIndex, readEntryRange, serialiseIndex, sha256Digest, type LayerIndex } from '@imgstream/core';
import { buildTar, chunked, pseudoRandom } from '../../../test/helpers/tar-builder.ts';

function layerTar(): Uint8Array {
  return buildTar([
    { type: 'file', name: 'text', content: pseudoRandom(3_000_000, 1, true) },
    { type: 'file', name: 'random', content: pseudoRandom(1_000_000, 2) },
    { type: 'file', name: 'zeros', content: new Uint8Array(500_000) },
    { type: 'file', name: 'more-text', content: pseudoRandom(700_000, 3, true) },
  ]);
}

/** Decodes every block from exactly its compressed range; checks they rebuild the uncompressed stream. */
async function assertBlocksRebuild(index: LayerIndex, blob: Uint8Array, tar: Uint8Array): Promise<void> {
  let out = 0;
  for (let i = 0; i < index.blocks.length; i++) {
    const b = index.blocks[i];
    assert.ok(b !== undefined);
    const bytes = await index.decodeBlock(i, blob.subarray(b.compressedOffset, b.compressedOffset + b.compressedSize));
    assert.ok(Buffer.from(bytes).equals(tar.subarray(out, out + b.uncompressedSize)), `block ${i}`);
    out += b.uncompressedSize;
  }
  assert.equal(out, tar.byteLength);
}

test('pako pin: zran restarts inflation at every checkpoint (bits primed, window set) byte-identically', async () => {
  const tar = layerTar();
  for (const level of [1, 6, 9]) {
    const gz = new Uint8Array(gzipSync(tar, { level }));
    const index = await buildZranIndex(chunked(gz, 10_000), { spanBytes: 65536 });
    assert.ok(index.blocks.length > 20, `level ${level}: ${index.blocks.length} blocks`);
    assert.ok(index.data.blocks.some((b) => (b.bits ?? 0) > 0), 'some checkpoints start mid-byte');
    assert.ok(index.data.blocks.slice(1).every((b) => b.member === true || (b.window?.byteLength ?? 0) === 32768));
    await assertBlocksRebuild(index, gz, tar);
  }
});

/** Counts spans decoded by the portable (pako) decoder instead of native zlib. */
async function portableDecodes(fn: () => Promise<void>): Promise<number> {
  let n = 0;
  const onFallback = (): void => void n++;
  subscribe('imgstream:core:inflate-fallback', onFallback);
  try {
    await fn();
  } finally {
    unsubscribe('imgstream:core:inflate-fallback', onFallback);
  }
  return n;
}

test('spans decode with native zlib from a synthetic restart prefix (window + bit offset), never the portable decoder', async () => {
  const tar = layerTar();
  for (const level of [1, 6, 9]) {
    const gz = new Uint8Array(gzipSync(tar, { level }));
    const index = await buildZranIndex(chunked(gz, 10_000), { spanBytes: 32768 });
    const bitsSeen = new Set(index.data.blocks.map((b) => b.bits ?? 0));
    assert.ok(bitsSeen.size >= 6, `level ${level}: checkpoints at ${[...bitsSeen].join(',')} bits`);
    assert.equal(await portableDecodes(() => assertBlocksRebuild(index, gz, tar)), 0, `level ${level}`);
  }
  // a stored (level 0) stream: checkpoints before stored blocks
  const stored = new Uint8Array(gzipSync(tar, { level: 0 }));
  const index = await buildZranIndex(chunked(stored, 10_000), { spanBytes: 32768 });
  assert.equal(await portableDecodes(() => assertBlocksRebuild(index, stored, tar)), 0);
});

test('zran handles multi-member gzip (checkpoints at member starts and spans across members)', async () => {
  const tar = layerTar();
  const cuts = [0, 100_000, 100_500, 2_000_000, tar.byteLength];
  const gz = new Uint8Array(Buffer.concat(cuts.slice(1).map((c, i) => gzipSync(tar.subarray(cuts[i], c)))));
  for (const span of [65536, 1 << 20, 8 << 20]) {
    const index = await buildZranIndex(chunked(gz, 7777), { spanBytes: span });
    assert.equal(index.layerDigest, sha256Digest(gz));
    const portable = await portableDecodes(async () => {
      await assertBlocksRebuild(index, gz, tar);
      await assertBlocksRebuild(parseIndex(serialiseIndex(index.data)), gz, tar);
    });
    // only spans that run into the next member take the portable decoder
    assert.ok(portable <= 2 * (cuts.length - 2), `span ${span}: ${portable} portable decodes`);
    if (span === 1 << 20) assert.ok(portable > 0, "this layout has spans that run into the next member");
  }
  const small = await buildZranIndex(chunked(gz, 7777), { spanBytes: 65536 });
  assert.ok(small.data.blocks.filter((b) => b.member === true).length >= 2);
  const reader = new BufferRangeReader(gz);
  const got = await readEntryRange(small, reader, 'random', 123_456, 300_000);
  assert.ok(Buffer.from(got).equals(Buffer.from(pseudoRandom(1_000_000, 2).subarray(123_456, 423_456))));
});

test('decodeBlock verifies each span: a changed byte -> IMGSTREAM_DIGEST_MISMATCH, wrong length -> IMGSTREAM_CORRUPT_DATA', async () => {
  const tar = layerTar();
  const gz = new Uint8Array(gzipSync(tar));
  for (const index of [await buildZranIndex(chunked(gz, 65536), { spanBytes: 65536 }), await buildRawIndex(chunked(tar, 65536))]) {
    const blob = index.format === 'zran' ? gz : tar;
    const b = index.blocks[3];
    assert.ok(b !== undefined);
    const bytes = Uint8Array.from(blob.subarray(b.compressedOffset, b.compressedOffset + b.compressedSize));
    const mid = Math.floor(bytes.byteLength / 2);
    bytes[mid] = (bytes[mid] ?? 0) ^ 1;
    await assert.rejects(index.decodeBlock(3, bytes), (e) => isImgstreamError(e, ErrorCode.DIGEST_MISMATCH));
    await assert.rejects(index.decodeBlock(3, bytes.subarray(1)), (e) => isImgstreamError(e, ErrorCode.CORRUPT_DATA));
    await assert.rejects(index.decodeBlock(index.blocks.length, bytes), (e) => isImgstreamError(e, ErrorCode.INVALID_INDEX));
  }
});

test('zran bounds decompression: ratio and size limits -> IMGSTREAM_LIMIT_EXCEEDED', async () => {
  const bomb = new Uint8Array(gzipSync(buildTar([{ type: 'file', name: 'z', content: new Uint8Array(40 << 20) }]), { level: 9 }));
  assert.ok(bomb.byteLength < 100_000);
  await assert.rejects(buildZranIndex(chunked(bomb, 65536), { maxRatio: 100, ratioFloorBytes: 1 << 20 }), (e) => isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED) && /1:1|ratio|expands/.test(String(e)));
  await assert.rejects(buildZranIndex(chunked(bomb, 65536), { maxUncompressedBytes: 10 << 20 }), (e) => isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED));
  await assert.rejects(buildRawIndex(chunked(buildTar([{ type: 'file', name: 'z', content: new Uint8Array(3 << 20) }]), 65536), { maxUncompressedBytes: 1 << 20 }), (e) =>
    isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED),
  );
});

test('zran rejects truncated, corrupt and trailing-garbage gzip, and a wrong layer digest', async () => {
  const tar = layerTar();
  const gz = new Uint8Array(gzipSync(tar));
  const isCorrupt = (e: unknown) => isImgstreamError(e, ErrorCode.CORRUPT_DATA) || isImgstreamError(e, ErrorCode.INVALID_TAR);
  for (const cut of [0, 5, 100, Math.floor(gz.byteLength / 2), gz.byteLength - 4, gz.byteLength - 1]) {
    await assert.rejects(buildZranIndex(chunked(gz.subarray(0, cut), 4096)), isCorrupt, `cut ${cut}`);
  }
  const flipped = Uint8Array.from(gz);
  const third = Math.floor(gz.byteLength / 3);
  flipped[third] = (flipped[third] ?? 0) ^ 0x40;
  await assert.rejects(buildZranIndex(chunked(flipped, 4096)), isCorrupt);
  await assert.rejects(buildZranIndex(chunked(Buffer.concat([gz, Buffer.from('garbage')]), 4096)), (e) => isImgstreamError(e, ErrorCode.CORRUPT_DATA));
  await assert.rejects(buildZranIndex(chunked(gz, 4096), { expectedDigest: sha256Digest('other') }), (e) => isImgstreamError(e, ErrorCode.DIGEST_MISMATCH));
  const ok = await buildZranIndex(chunked(gz, 4096), { expectedDigest: sha256Digest(gz) });
  assert.equal(ok.entries.get('zeros')?.size, 500_000);
});

test('bad spanBytes is refused naming the option', async () => {
  for (const spanBytes of [100, 64 << 20, 1.5]) {
    await assert.rejects(buildZranIndex(chunked(new Uint8Array(10), 10), { spanBytes }), (e) => isImgstreamError(e, ErrorCode.INVALID_OPTION) && /spanBytes/.test(String(e)));
  }
});

test('buildZranIndex honours an abort signal', async () => {
  const gz = new Uint8Array(gzipSync(layerTar()));
  const ac = new AbortController();
  const reason = new Error('stop');
  ac.abort(reason);
  await assert.rejects(buildZranIndex(chunked(gz, 4096), { signal: ac.signal }), (e) => e === reason);
});

test('zran and raw builds give identical indexes when the blob arrives one byte at a time', async () => {
  const tar = buildTar([
    { type: 'file', name: 'a', content: pseudoRandom(40_000, 5, true) },
    { type: 'file', name: 'b', content: pseudoRandom(30_000, 6) },
  ]);
  const gz = new Uint8Array(gzipSync(tar));
  assert.deepEqual((await buildZranIndex(chunked(gz, 1), { spanBytes: 4096 })).data, (await buildZranIndex(chunked(gz, gz.byteLength), { spanBytes: 4096 })).data);
  assert.deepEqual((await buildRawIndex(chunked(tar, 1), { spanBytes: 4096 })).data, (await buildRawIndex(chunked(tar, tar.byteLength), { spanBytes: 4096 })).data);
});
