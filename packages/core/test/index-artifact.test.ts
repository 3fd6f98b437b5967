import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gunzipSync, gzipSync } from 'node:zlib';
import { BufferRangeReader, ErrorCode, buildRawIndex, buildZranIndex, isImgstreamError, openLayerIndex, parseIndex, readEntryRange, serialiseIndex, sha256Digest } from '@imgstream/core';
import { allTypesEntries } from '../../../test/helpers/fixtures.ts';
import { buildTar, chunked } from '../../../test/helpers/tar-builder.ts';

const tar = buildTar(allTypesEntries());
const gz = new Uint8Array(gzipSync(tar));

/** Re-encodes a serialised index after editing its JSON header (and optionally its windows). */
function edit(bytes: Uint8Array, fn: (h: Record<string, unknown>) => void, windows?: (w: Buffer) => Buffer): Uint8Array {
  const raw = gunzipSync(bytes);
  const len = raw.readUInt32BE(12);
  const h = JSON.parse(raw.subarray(16, 16 + len).toString()) as Record<string, unknown>;
  fn(h);
  const json = Buffer.from(JSON.stringify(h));
  const prefix = Buffer.from(raw.subarray(0, 16));
  prefix.writeUInt32BE(json.byteLength, 12);
  const w = Buffer.from(raw.subarray(16 + len));
  return new Uint8Array(gzipSync(Buffer.concat([prefix, json, windows ? windows(w) : w])));
}

const invalid = (e: unknown) => isImgstreamError(e, ErrorCode.INVALID_INDEX);

test('serialised zran and raw indexes round-trip exactly and read the same bytes', async () => {
  for (const [index, blob] of [
    [await buildZranIndex(chunked(gz, 65536), { spanBytes: 65536 }), gz],
    [await buildRawIndex(chunked(tar, 65536)), tar],
  ] as const) {
    const bytes = serialiseIndex(index.data);
    const back = parseIndex(bytes, { expectedLayerDigest: index.layerDigest });
    assert.deepEqual(back.data, index.data);
    assert.deepEqual([...back.entries.entries()], [...index.entries.entries()]);
    assert.deepEqual(back.blocks, index.blocks);
    assert.deepEqual(back.children(''), index.children(''));
    const r = new BufferRangeReader(blob);
    assert.deepEqual(await readEntryRange(back, r, 'usr/bin/tool', 1000, 100_000), await readEntryRange(index, r, 'usr/bin/tool', 1000, 100_000));
    // windows dominate a zran index; the rest is small (entries, 32-byte digests)
    assert.ok(bytes.byteLength < index.blocks.length * (32768 + 100) + 4096, `${index.format}: ${bytes.byteLength} bytes for ${index.blocks.length} blocks`);
  }
});

test('parseIndex rejects malformed, inconsistent and oversized indexes with coded errors', async () => {
  const zran = await buildZranIndex(chunked(gz, 65536), { spanBytes: 65536 });
  const good = serialiseIndex(zran.data);
  assert.ok(zran.blocks.length >= 4);
  await assert.rejects(async () => parseIndex(good.subarray(0, good.byteLength - 10)), invalid);
  await assert.rejects(async () => parseIndex(new Uint8Array(gzipSync(Buffer.from('NOTANIDX\0\0\0\x01\0\0\0\0')))), /bad magic/);
  await assert.rejects(async () => parseIndex(new Uint8Array(gzipSync(Buffer.from('IMGSTRIX\0\0\0\x02\0\0\0\0')))), /unsupported version 2/);
  // checkpoints out of order
  await assert.rejects(async () => parseIndex(edit(good, (h) => {
    const b = h.blocks as unknown[];
    [b[1], b[2]] = [b[2], b[1]];
  })), (e) => invalid(e) && /out of order/.test(String(e)));
  // a span past the end of the blob
  await assert.rejects(async () => parseIndex(edit(good, (h) => {
    const b = h.blocks as number[][];
    const last = b[b.length - 1] as number[];
    last[1] = (last[1] ?? 0) + 100;
  })), (e) => invalid(e) && /outside the layer blob/.test(String(e)));
  // a gap between fetched ranges
  await assert.rejects(async () => parseIndex(edit(good, (h) => {
    const b = h.blocks as number[][];
    const first = b[0] as number[];
    first[1] = (first[1] ?? 0) - 1;
  })), (e) => invalid(e) && /does not start where/.test(String(e)));
  // blocks not covering the stream
  await assert.rejects(async () => parseIndex(edit(good, (h) => {
    h.uncompressedSize = (h.uncompressedSize as number) + 1;
  })), invalid);
  // a bad digest, bad bits, window lengths not matching the payload
  await assert.rejects(async () => parseIndex(edit(good, (h) => {
    ((h.blocks as unknown[][])[1] as unknown[])[4] = 'xyz';
  })), invalid);
  await assert.rejects(async () => parseIndex(edit(good, (h) => {
    ((h.blocks as unknown[][])[1] as unknown[])[5] = 9;
  })), invalid);
  await assert.rejects(async () => parseIndex(edit(good, () => {}, (w) => w.subarray(1))), invalid);
  // entries: region outside the stream, '..' path, duplicate path, missing parent
  await assert.rejects(async () => parseIndex(edit(good, (h) => {
    const e = (h.entries as Array<Record<string, unknown>>).find((x) => x.p === 'usr/bin/tool');
    if (e) (e.r as number[])[2] = 10 ** 12;
  })), invalid);
  for (const p of ['../etc', '..', '.', '/etc/x', 'etc/', 'etc//x', 'etc/./x', 'etc/..', 'etc/../x', 'etc/x/.']) {
    await assert.rejects(async () => parseIndex(edit(good, (h) => {
      (h.entries as Array<Record<string, unknown>>).push({ p, t: 'fifo', m: 0, u: 0, g: 0, mt: 0 });
    })), (e) => invalid(e) && /bad path/.test(String(e)), p);
  }
  // names that only look like dot parts are fine
  const dotty = parseIndex(edit(good, (h) => {
    for (const p of ['etc/.x', 'etc/..x', 'etc/...']) (h.entries as Array<Record<string, unknown>>).push({ p, t: 'fifo', m: 0, u: 0, g: 0, mt: 0 });
  }));
  assert.deepEqual(['etc/.x', 'etc/..x', 'etc/...'].map((p) => dotty.entries.get(p)?.type), ['fifo', 'fifo', 'fifo']);
  await assert.rejects(async () => parseIndex(edit(good, (h) => {
    (h.entries as Array<Record<string, unknown>>).push({ p: 'etc/hosts', t: 'file', m: 0, u: 0, g: 0, mt: 0 });
  })), /duplicate path/);
  await assert.rejects(async () => parseIndex(edit(good, (h) => {
    (h.entries as Array<Record<string, unknown>>).push({ p: 'nowhere/x', t: 'fifo', m: 0, u: 0, g: 0, mt: 0 });
  })), invalid);
  // limits and identity
  await assert.rejects(async () => parseIndex(good, { maxIndexBytes: 100 }), (e) => isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED));
  await assert.rejects(async () => parseIndex(good, { maxDecodedIndexBytes: 4096 }), (e) => isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED));
  await assert.rejects(async () => parseIndex(good, { maxEntries: 3 }), (e) => isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED));
  await assert.rejects(async () => parseIndex(good, { maxBlockBytes: 1000 }), (e) => isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED));
  await assert.rejects(async () => parseIndex(good, { expectedLayerDigest: sha256Digest('x') }), (e) => isImgstreamError(e, ErrorCode.DIGEST_MISMATCH));
  await assert.rejects(openLayerIndex(new BufferRangeReader(gz.subarray(1)), { layerDigest: zran.layerDigest, serialisedIndex: good }), invalid);
});

test('openLayerIndex: plain gzip without an index -> IMGSTREAM_NOT_STREAMABLE', async () => {
  await assert.rejects(openLayerIndex(new BufferRangeReader(gz), { layerDigest: sha256Digest(gz) }), (e) => isImgstreamError(e, ErrorCode.NOT_STREAMABLE));
});
