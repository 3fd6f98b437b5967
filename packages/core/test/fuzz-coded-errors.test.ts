// Random corruption of every input format: parsers either succeed or throw an ImgstreamError with a
// code; never a TypeError/RangeError or a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gunzipSync, gzipSync } from 'node:zlib';
import { BufferRangeReader, ImgstreamError, buildRawIndex, buildZranIndex, openEstargzIndex, parseIndex, readEntryRange, readTar, serialiseIndex, sha256Digest, type LayerIndex } from '@imgstream/core';
import { buildEstargz } from '../../../test/helpers/estargz-builder.ts';
import { allTypesEntries } from '../../../test/helpers/fixtures.ts';
import { buildTar, chunked, pseudoRandom } from '../../../test/helpers/tar-builder.ts';

let seed = 987654321;
const rnd = (n: number): number => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed % n;
};

function mutate(data: Uint8Array, from = 0, to = data.byteLength): Uint8Array {
  const out = Uint8Array.from(data);
  const n = 1 + rnd(4);
  for (let i = 0; i < n; i++) {
    const p = from + rnd(Math.max(1, to - from));
    out[p] = rnd(3) === 0 ? 0 : rnd(256);
  }
  return out;
}

async function codedOrOk(what: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof ImgstreamError, `${what}: ${String((err as Error)?.stack ?? err)}`);
  }
}

async function readAll(index: LayerIndex, blob: Uint8Array): Promise<void> {
  const r = new BufferRangeReader(blob);
  for (const [p, e] of index.entries) if (e.type === 'file') await readEntryRange(index, r, p, 0, e.size);
}

const small = allTypesEntries().filter((e) => e.name !== 'big' && e.name !== 'usr/share/doc.txt');

test('fuzz: corrupted tar streams -> ImgstreamError or success', async () => {
  const tar = buildTar(small);
  for (let i = 0; i < 300; i++) {
    const bad = mutate(tar);
    await codedOrOk(`tar mutation ${i}`, async () => {
      for await (const e of readTar(chunked(bad, 1 + rnd(5000)))) for await (const _ of e.body) void _;
    });
    await codedOrOk(`raw index mutation ${i}`, () => buildRawIndex(chunked(bad, 4096)));
  }
});

test('fuzz: corrupted gzip layers -> ImgstreamError or success (and verified reads)', async () => {
  const gz = new Uint8Array(gzipSync(buildTar([...small, { type: 'file', name: 'r', content: pseudoRandom(200_000, 3) }])));
  const good = await buildZranIndex(chunked(gz, 65536), { spanBytes: 16384 });
  for (let i = 0; i < 150; i++) {
    const bad = mutate(gz);
    await codedOrOk(`gzip mutation ${i}`, () => buildZranIndex(chunked(bad, 8192), { spanBytes: 16384 }));
    // the good index over a corrupted blob: every read is verified
    await codedOrOk(`read through good index ${i}`, () => readAll(good, bad));
  }
});

test('fuzz: corrupted serialised indexes -> ImgstreamError or success', async () => {
  const tar = buildTar(small);
  const gz = new Uint8Array(gzipSync(tar));
  const bytes = serialiseIndex((await buildZranIndex(chunked(gz, 65536), { spanBytes: 16384 })).data);
  const raw = gunzipSync(bytes);
  const jsonEnd = 16 + raw.readUInt32BE(12);
  for (let i = 0; i < 300; i++) {
    const inJson = rnd(2) === 0;
    const bad = new Uint8Array(gzipSync(mutate(raw, inJson ? 16 : 0, inJson ? jsonEnd : raw.byteLength)));
    await codedOrOk(`index mutation ${i}`, async () => {
      const idx = parseIndex(bad);
      await readAll(idx, gz);
    });
    await codedOrOk(`compressed index mutation ${i}`, async () => parseIndex(mutate(bytes)));
  }
});

test('fuzz: corrupted eStargz blobs -> ImgstreamError or success', async () => {
  const { blob, tocOffset } = buildEstargz(small.filter((e) => e.type !== 'sparse'), { chunkSize: 30_000 });
  for (let i = 0; i < 300; i++) {
    const bad = rnd(2) === 0 ? mutate(blob, tocOffset) : mutate(blob, 0, tocOffset);
    await codedOrOk(`estargz mutation ${i}`, async () => {
      const idx = await openEstargzIndex(new BufferRangeReader(bad), { layerDigest: sha256Digest(bad) });
      await readAll(idx, bad);
    });
  }
});
