import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferRangeReader, ErrorCode, ESTARGZ_TOC_DIGEST_ANNOTATION, isImgstreamError, openEstargzIndex, openLayerIndex, parseEstargzFooter, readEntryRange, sha256Digest } from '@imgstream/core';
import { buildEstargz, estargzFooter } from '../../../test/helpers/estargz-builder.ts';
import { pseudoRandom, type TarEntrySpec } from '../../../test/helpers/tar-builder.ts';

const entries: TarEntrySpec[] = [
  { type: 'dir', name: 'bin/' },
  { type: 'file', name: 'bin/big', content: pseudoRandom(300_000, 4), mode: 0o755 },
  { type: 'file', name: 'bin/small', content: 'tiny\n' },
  { type: 'file', name: 'etc/.wh.gone', content: '' },
  { type: 'file', name: 'opt/.wh..wh..opq', content: '' },
];
const open = (blob: Uint8Array, extra: Partial<Parameters<typeof openEstargzIndex>[1]> = {}) => openEstargzIndex(new BufferRangeReader(blob), { layerDigest: sha256Digest(blob), ...extra });
const invalid = (e: unknown) => isImgstreamError(e, ErrorCode.INVALID_INDEX);

test('eStargz: footers (current and legacy), TOC digest, chunks and whiteouts', async () => {
  assert.deepEqual(parseEstargzFooter(estargzFooter(0x1234)), { tocOffset: 0x1234, footerBytes: 51 });
  assert.deepEqual(parseEstargzFooter(estargzFooter(0x1234, true)), { tocOffset: 0x1234, footerBytes: 47 });
  const { blob, tocDigest } = buildEstargz(entries, { chunkSize: 100_000 });
  const index = await openLayerIndex(new BufferRangeReader(blob), { layerDigest: sha256Digest(blob), annotations: { [ESTARGZ_TOC_DIGEST_ANNOTATION]: tocDigest } });
  assert.equal(index.format, 'estargz');
  assert.equal(index.entries.get('bin/big')?.extents?.length, 3);
  assert.equal(index.entries.get('etc/gone')?.type, 'whiteout');
  assert.equal(index.entries.get('opt')?.opaque, true);
  const got = await readEntryRange(index, new BufferRangeReader(blob), 'bin/big', 99_000, 5000);
  assert.ok(Buffer.from(got).equals(Buffer.from(pseudoRandom(300_000, 4).subarray(99_000, 104_000))));
});

test('eStargz: bad footer, TOC out of range, truncated blob, oversized TOC -> coded errors', async () => {
  const { blob, tocOffset } = buildEstargz(entries);
  const badFooter = Uint8Array.from(blob);
  badFooter[blob.byteLength - 30] = (badFooter[blob.byteLength - 30] ?? 0) ^ 1;
  await assert.rejects(open(badFooter), invalid);
  await assert.rejects(open(blob.subarray(0, blob.byteLength - 1)), invalid);
  await assert.rejects(open(blob.subarray(0, 20)), invalid);
  const outside = Buffer.concat([blob.subarray(0, blob.byteLength - 51), estargzFooter(blob.byteLength + 10)]);
  await assert.rejects(open(outside), (e) => invalid(e) && /outside the blob/.test(String(e)));
  const wrongToc = Buffer.concat([blob.subarray(0, blob.byteLength - 51), estargzFooter(tocOffset + 3)]);
  await assert.rejects(open(wrongToc), (e) => isImgstreamError(e, ErrorCode.CORRUPT_DATA) || invalid(e));
  await assert.rejects(open(blob, { maxTocBytes: 100 }), (e) => isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED));
  await assert.rejects(open(blob, { maxTocJsonBytes: 100 }), (e) => isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED));
  await assert.rejects(open(blob, { maxEntries: 2 }), (e) => isImgstreamError(e, ErrorCode.LIMIT_EXCEEDED));
  await assert.rejects(open(blob, { tocDigest: sha256Digest('other') }), (e) => isImgstreamError(e, ErrorCode.DIGEST_MISMATCH));
});

test('eStargz: chunk digests are verified in decodeBlock; bad TOC entries are refused', async () => {
  const bad = buildEstargz(entries, {
    editToc: (toc) => {
      const e = toc.entries.find((x) => x.name === 'bin/small');
      if (e) e.chunkDigest = sha256Digest('not it');
    },
  });
  const index = await open(bad.blob);
  await assert.rejects(readEntryRange(index, new BufferRangeReader(bad.blob), 'bin/small', 0, 5), (e) => isImgstreamError(e, ErrorCode.DIGEST_MISMATCH));
  const edits: Array<(toc: { entries: Array<Record<string, unknown>> }) => void> = [
    (toc) => { const e = toc.entries.find((x) => x.name === 'bin/small'); if (e) delete e.chunkDigest; },
    (toc) => { const e = toc.entries.find((x) => x.name === 'bin/small'); if (e) e.offset = 10 ** 9; },
    (toc) => { const e = toc.entries.find((x) => x.name === 'bin/small'); if (e) e.type = 'weird'; },
    (toc) => { const e = toc.entries.find((x) => x.type === 'chunk'); if (e) e.chunkOffset = 1; },
    (toc) => { toc.entries.push({ name: 'orphan', type: 'chunk', offset: 0, chunkDigest: sha256Digest('') }); },
    (toc) => { toc.entries.push({ name: '../escape', type: 'dir' }); },
  ];
  for (const [i, editToc] of edits.entries()) {
    const b = buildEstargz(entries, { chunkSize: 100_000, editToc });
    await assert.rejects(open(b.blob), invalid, `edit ${i}`);
  }
});

test('eStargz: a small TOC is read with the footer in one range read; a big one takes two', async () => {
  const small = buildEstargz(entries);
  const big = buildEstargz([...entries, ...Array.from({ length: 3000 }, (_, i): TarEntrySpec => ({ type: 'file', name: `many/${i}-${'n'.repeat(60)}`, content: String(i) }))]);
  for (const [b, reads] of [[small.blob, 1], [big.blob, 2]] as const) {
    const inner = new BufferRangeReader(b);
    let n = 0;
    const counting = { size: inner.size, readRange: (o: number, l: number, opt?: { signal?: AbortSignal }) => (n++, inner.readRange(o, l, opt)) };
    const index = await openEstargzIndex(counting, { layerDigest: sha256Digest(b) });
    assert.equal(n, reads);
    assert.ok(index.entries.has('bin/big'));
  }
});
