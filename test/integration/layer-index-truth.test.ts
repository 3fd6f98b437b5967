import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferRangeReader, buildLayerIndex, openEstargzIndex, openLayerIndex, parseIndex, serialiseIndex, sha256Digest } from '@imgstream/core';
import { allTypesEntries, multiLayerEntries } from '../helpers/fixtures.ts';
import { buildEstargz } from '../helpers/estargz-builder.ts';
import { assertIndexMatchesTruth, extractTruth } from '../helpers/layer-truth.ts';
import { buildTar, chunked, gzip } from '../helpers/tar-builder.ts';

test('zran and raw indexes of a layer with every entry type equal `tar -x`', async (t) => {
  const tar = buildTar(allTypesEntries());
  const truth = await extractTruth(t, tar);
  assert.ok(truth.size > 25);
  const gz = gzip(tar);
  for (const [compression, blob] of [['gzip', gz], ['none', tar]] as const) {
    const index = await buildLayerIndex(chunked(blob, 4096), { compression, spanBytes: 65536 });
    assert.equal(index.layerDigest, sha256Digest(blob));
    assert.equal(index.layerSize, blob.byteLength);
    assert.ok(index.blocks.length > 3, `${compression}: ${index.blocks.length} blocks`);
    const reader = new BufferRangeReader(blob);
    await assertIndexMatchesTruth(index, reader, truth, { seed: 7 });
    // the serialised index opens again and reads the same
    const reopened = await openLayerIndex(reader, { layerDigest: index.layerDigest, serialisedIndex: serialiseIndex(index.data) });
    assert.equal(reopened.format, compression === 'gzip' ? 'zran' : 'raw');
    await assertIndexMatchesTruth(reopened, reader, truth, { seed: 8, randomReads: 50 });
  }
});

test('several layers with whiteouts and opaque dirs: each layer index equals its `tar -x`', async (t) => {
  for (const [i, entries] of multiLayerEntries().entries()) {
    const tar = buildTar(entries);
    const truth = await extractTruth(t, tar);
    const gz = gzip(tar);
    const zran = parseIndex(serialiseIndex((await buildLayerIndex(chunked(gz, 1000), { compression: 'gzip', spanBytes: 32768 })).data));
    await assertIndexMatchesTruth(zran, new BufferRangeReader(gz), truth, { seed: i });
    const raw = await buildLayerIndex(chunked(tar, 1000), { compression: 'none', spanBytes: 4096 });
    await assertIndexMatchesTruth(raw, new BufferRangeReader(tar), truth, { seed: i });
  }
  const l1 = await buildLayerIndex(chunked(buildTar(multiLayerEntries()[1] ?? []), 512), { compression: 'none' });
  assert.equal(l1.entries.get('app/a.txt')?.type, 'whiteout');
  assert.equal(l1.entries.get('app/data')?.opaque, true);
  assert.deepEqual(l1.children('app/data'), ['y']);
});

test('eStargz blobs (chunked, innerOffset, legacy footer) equal `tar -x` of the same entries', async (t) => {
  const entries = allTypesEntries().filter((e) => e.type !== 'sparse');
  const truth = await extractTruth(t, buildTar(entries));
  for (const opts of [{ chunkSize: 50_000 }, { chunkSize: 1 << 20, minChunkSize: 4096 }, { chunkSize: 65536, legacyFooter: true }]) {
    const { blob, tocDigest } = buildEstargz(entries, opts);
    const reader = new BufferRangeReader(blob);
    const index = await openEstargzIndex(reader, { layerDigest: sha256Digest(blob), tocDigest });
    assert.equal(index.format, 'estargz');
    if (opts.minChunkSize !== undefined) assert.ok([...index.entries.values()].some((e) => e.extents?.some((x) => x.blockOffset > 0)), 'innerOffset used');
    await assertIndexMatchesTruth(index, reader, truth, { mtimeSeconds: true, seed: opts.chunkSize });
  }
});
