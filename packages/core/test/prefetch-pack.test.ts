import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BufferRangeReader,
  ErrorCode,
  PinnedFileRanges,
  buildPrefetchPack,
  isImgstreamError,
  packMemberRanges,
  packRangesOf,
  packRequests,
  PackReadAhead,
  packWarmupPieces,
  parsePrefetchReport,
  replayPrefetchPack,
  serialisePrefetchReport,
  sha256Digest,
  type Digest,
  type PackFileRange,
  type PrefetchReport,
} from '@imgstream/core';
import { pseudoRandom } from '../../../test/helpers/tar-builder.ts';

const LAYERS = [sha256Digest('layer a'), sha256Digest('layer b')] as Digest[];
const KiB = 1024;
/** 64 KiB alignment and extension, ranges cut into 256 KiB pieces. */
const LAYOUT = { align: 64 * KiB, extend: 64 * KiB, piece: 256 * KiB };

/** Files of two layers: half compressible text, half noise, so members differ in size. */
function files(): Map<string, Uint8Array> {
  const m = new Map<string, Uint8Array>();
  for (let i = 0; i < 12; i++) {
    const size = 300 * KiB + i * 37 * KiB;
    m.set(`${i % 2}:f${i}`, i % 3 === 0 ? new TextEncoder().encode(`line ${i}\n`.repeat(size / 8).slice(0, size)) : pseudoRandom(size, i));
  }
  return m;
}

const sizeOf = (data: Map<string, Uint8Array>) => (layer: number, path: string) => data.get(`${layer}:${path}`)?.byteLength;

/** A recorded order of reads: pieces of several files, some twice, out of file order. */
function recorded(): PackFileRange[] {
  return [
    { layer: 0, path: 'f0', offset: 0, length: 4096 },
    { layer: 1, path: 'f1', offset: 200 * KiB, length: 10 * KiB },
    { layer: 0, path: 'f2', offset: 0, length: 290 * KiB },
    { layer: 0, path: 'f0', offset: 100 * KiB, length: 4096 },
    { layer: 1, path: 'f3', offset: 50 * KiB, length: 1 },
    { layer: 0, path: 'f4', offset: 0, length: 400 * KiB },
    { layer: 1, path: 'f5', offset: 0, length: 100 * KiB },
    { layer: 0, path: 'f6', offset: 10, length: 20 },
    { layer: 1, path: 'f7', offset: 300 * KiB, length: 64 * KiB },
    { layer: 0, path: 'f8', offset: 0, length: 500 * KiB },
    { layer: 1, path: 'f9', offset: 0, length: 128 * KiB },
    { layer: 0, path: 'nothere', offset: 0, length: 10 },
  ];
}

async function pack(data: Map<string, Uint8Array>, ranges: PackFileRange[], memberBytes = 256 * KiB) {
  return buildPrefetchPack(ranges, async (f) => data.get(`${f.layer}:${f.path}`)!.slice(f.offset, f.offset + f.length), LAYOUT, { memberBytes, firstMemberBytes: 64 * KiB });
}

/** A range reader over a blob that counts the requests in flight and their sizes. */
class CountingReader extends BufferRangeReader {
  readonly requests: Array<{ offset: number; length: number }> = [];
  inflight = 0;
  maxInflight = 0;
  override async readRange(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    this.requests.push({ offset, length });
    this.maxInflight = Math.max(this.maxInflight, ++this.inflight);
    try {
      await new Promise((resolve) => setTimeout(resolve, 5));
      return await super.readRange(offset, length, options);
    } finally {
      this.inflight--;
    }
  }
}

test('prefetch pack: ranges are widened to the alignment and the read-ahead extension, joined per file, cut into pieces, in first-read order, within the file', () => {
  const data = files();
  const out = packRangesOf(recorded(), sizeOf(data), LAYOUT);
  // f0: [0, 4 KiB) and [100 KiB, 104 KiB) widen to [0, 128 KiB) and [64 KiB, 192 KiB): one range
  assert.deepEqual(out.filter((f) => f.path === 'f0'), [{ layer: 0, path: 'f0', offset: 0, length: 192 * KiB }]);
  // f2 (374 KiB): ends stop at the file's end; cut into a 256 KiB piece and the rest
  assert.deepEqual(out.filter((f) => f.path === 'f2'), [
    { layer: 0, path: 'f2', offset: 0, length: 256 * KiB },
    { layer: 0, path: 'f2', offset: 256 * KiB, length: data.get('0:f2')!.byteLength - 256 * KiB },
  ]);
  // a range that starts mid-file starts at an aligned offset
  assert.deepEqual(out.find((f) => f.path === 'f1'), { layer: 1, path: 'f1', offset: 192 * KiB, length: 128 * KiB });
  // pieces are adjacent and at most `piece` long; the order of the first reads; a file the index does not have is left out
  assert.ok(out.every((f) => f.length <= LAYOUT.piece));
  assert.deepEqual([...new Set(out.map((f) => f.path))], ['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8', 'f9']);
  const f8 = out.filter((f) => f.path === 'f8');
  assert.deepEqual(f8.map((f) => f.offset), [0, 256 * KiB, 512 * KiB]);
  assert.equal(f8.reduce((n, f) => n + f.length, 0), 576 * KiB);
});

test('prefetch pack: a pack read in parallel range requests pins every range with its bytes, the first request alone and small', async () => {
  const data = files();
  const ranges = packRangesOf(recorded(), sizeOf(data), LAYOUT);
  const { descriptor, bytes } = await pack(data, ranges);
  assert.equal(descriptor.size, bytes.byteLength);
  assert.equal(descriptor.digest, sha256Digest(bytes));
  assert.ok(descriptor.members.length >= 5, `${descriptor.members.length} members`);
  assert.deepEqual(packMemberRanges(descriptor, ranges).reduce((a, b) => a + b, 0), ranges.length);

  const pinned = new PinnedFileRanges();
  const reader = new CountingReader(bytes);
  const order: string[] = [];
  const result = await replayPrefetchPack(descriptor, ranges, LAYERS, reader, pinned, () => undefined, (done) => order.push(...done.map((f) => f.path)), { parallel: 3, requestBytes: 200 * KiB });
  assert.equal(result.error, undefined);
  assert.deepEqual(result.missing, []);
  assert.equal(result.ranges, ranges.length);
  assert.equal(result.packBytes, bytes.byteLength);
  assert.equal(result.bytes, ranges.reduce((n, f) => n + f.length, 0));
  assert.deepEqual([...order].sort(), ranges.map((f) => f.path).sort());
  // the first request starts the pack; all hold whole members, up to 200 KiB or one member
  assert.equal(reader.requests[0]!.offset, 0);
  assert.ok(reader.requests.length < descriptor.members.length, `${reader.requests.length} requests for ${descriptor.members.length} members`);
  assert.ok(reader.maxInflight > 1 && reader.maxInflight <= 3, `${reader.maxInflight} requests at once`);
  assert.equal(reader.requests.reduce((n, r) => n + r.length, 0), bytes.byteLength);

  for (const f of ranges) {
    const got = new Uint8Array(f.length);
    assert.equal(pinned.readInto(LAYERS[f.layer]!, f.path, f.offset, got), true, f.path);
    assert.deepEqual(got, data.get(`${f.layer}:${f.path}`)!.subarray(f.offset, f.offset + f.length), f.path);
  }
  // a read across two adjacent pieces is answered from both
  const across = new Uint8Array(8 * KiB);
  assert.equal(pinned.readInto(LAYERS[0]!, 'f2', 252 * KiB, across), true);
  assert.deepEqual(across, data.get('0:f2')!.subarray(252 * KiB, 260 * KiB));
  // a read that the ranges do not hold whole is read elsewhere
  const f2 = data.get('0:f2')!;
  assert.equal(pinned.readInto(LAYERS[0]!, 'f2', f2.byteLength - 10, new Uint8Array(20)), undefined);
  assert.equal(pinned.readInto(LAYERS[1]!, 'f0', 0, new Uint8Array(20)), undefined, 'the same path in another layer');
});

test('prefetch pack: a reader of a range whose request is in flight waits for it; a corrupt member stops the replay and its ranges are read elsewhere', async () => {
  const data = files();
  const ranges = packRangesOf(recorded(), sizeOf(data), LAYOUT);
  const { descriptor, bytes } = await pack(data, ranges);
  const counts = packMemberRanges(descriptor, ranges);
  // corrupt the last member
  const corrupt = new Uint8Array(bytes);
  corrupt[corrupt.byteLength - 20]! ^= 0xff;
  const pinned = new PinnedFileRanges();
  let waited: Promise<void> | true | undefined;
  const first = ranges[0]!;
  const replay = replayPrefetchPack(
    descriptor,
    ranges,
    LAYERS,
    new CountingReader(corrupt),
    pinned,
    () => {
      // announced, not there yet: the first member is asked for first, so its reader waits
      waited = pinned.readInto(LAYERS[first.layer]!, first.path, first.offset, new Uint8Array(16));
    },
    () => undefined,
    { parallel: 2 },
  );
  assert.ok(waited instanceof Promise, 'the reader of the first range waits for it');
  await waited;
  const got = new Uint8Array(16);
  assert.equal(pinned.readInto(LAYERS[first.layer]!, first.path, first.offset, got), true);
  assert.deepEqual(got, data.get(`${first.layer}:${first.path}`)!.subarray(first.offset, first.offset + 16));

  const result = await replay;
  assert.ok(isImgstreamError(result.error, ErrorCode.DIGEST_MISMATCH), String(result.error));
  const lastCount = counts[counts.length - 1]!;
  assert.equal(result.ranges, ranges.length - lastCount);
  assert.deepEqual(result.missing, ranges.slice(ranges.length - lastCount), 'the ranges that did not arrive');
  // the last member's ranges are gone (their readers read through the fetcher), the others stay
  for (const [i, f] of ranges.entries()) {
    const r = pinned.readInto(LAYERS[f.layer]!, f.path, f.offset, new Uint8Array(1));
    assert.equal(r, i >= ranges.length - lastCount ? undefined : true, `${f.path}`);
  }
});

test('prefetch pack: a source that fails or returns short stops the replay with an error, never a rejection', async () => {
  const data = files();
  const ranges = packRangesOf(recorded(), sizeOf(data), LAYOUT);
  const { descriptor, bytes } = await pack(data, ranges);
  const short = new BufferRangeReader(bytes.subarray(0, bytes.byteLength - 100));
  const pinned = new PinnedFileRanges();
  const r1 = await replayPrefetchPack(descriptor, ranges, LAYERS, short, pinned, () => undefined, () => undefined);
  assert.ok(isImgstreamError(r1.error, ErrorCode.CORRUPT_DATA), String(r1.error));
  assert.ok(r1.ranges < ranges.length);
  assert.equal(pinned.size, r1.ranges, 'only what arrived stays pinned');

  const failing = { size: bytes.byteLength, readRange: async () => Promise.reject(new Error('connection reset')) };
  const r2 = await replayPrefetchPack(descriptor, ranges, LAYERS, failing, new PinnedFileRanges(), () => undefined, () => undefined);
  assert.equal(r2.ranges, 0);
  assert.match(String(r2.error), /connection reset/);

  const controller = new AbortController();
  controller.abort(new Error('closing'));
  const r3 = await replayPrefetchPack(descriptor, ranges, LAYERS, new BufferRangeReader(bytes), new PinnedFileRanges(), () => undefined, () => undefined, { signal: controller.signal });
  assert.equal(r3.ranges, 0);
  assert.ok(r3.error !== undefined);
});

test('prefetch pack: a descriptor that does not fit the ranges is refused; the report keeps its pack through serialising and refuses a malformed one', async () => {
  const data = files();
  const ranges = packRangesOf(recorded(), sizeOf(data), LAYOUT);
  const { descriptor } = await pack(data, ranges);
  assert.throws(() => packMemberRanges(descriptor, ranges.slice(1)), /does not end at the end of a file range|does not hold every/);
  assert.throws(() => packMemberRanges({ ...descriptor, size: descriptor.size + 1 }, ranges), /add up/);
  assert.throws(() => packMemberRanges(descriptor, [...ranges, ranges[0]!]), /does not hold every file range/);

  const report: PrefetchReport = {
    version: 1,
    manifestDigest: sha256Digest('manifest') as Digest,
    createdAt: '2026-12-01T00:00:00.000Z',
    layers: LAYERS.map((digest) => ({ digest, format: 'zran' as const, indexId: sha256Digest(digest) as Digest, blocks: 10 })),
    ranges: [{ layer: 0, first: 0, count: 2 }],
    files: recorded().slice(0, 3),
    pack: descriptor,
  };
  assert.deepEqual(parsePrefetchReport(serialisePrefetchReport(report)), report);
  const json = JSON.parse(new TextDecoder().decode(serialisePrefetchReport(report)));
  const invalid = (mutate: (j: { pack: Record<string, unknown>; files?: unknown }) => void, re: RegExp) => {
    const j = structuredClone(json);
    mutate(j);
    assert.throws(() => parsePrefetchReport(new TextEncoder().encode(JSON.stringify(j))), (e: unknown) => isImgstreamError(e, ErrorCode.INVALID_PREFETCH_REPORT) && re.test(String(e)));
  };
  invalid((j) => (j.pack.members = [[1, 2]]), /pack member 0/);
  invalid((j) => (j.pack.size = 5), /add up/);
  invalid((j) => (j.pack.digest = 'md5:x'), /bad pack/);
  invalid((j) => (j.pack.align = 0), /align/);
  invalid((j) => delete j.files, /a pack without files/);
});

test('prefetch pack: read ahead, the replay\'s own range requests start before the replay and answer it; a failed one fails the replay, as without read-ahead', async () => {
  const data = files();
  const ranges = packRangesOf(recorded(), sizeOf(data), LAYOUT);
  const { descriptor, bytes } = await pack(data, ranges);
  const plan = packRequests(descriptor, 200 * KiB);
  assert.equal(plan[0]!.offset, 0);
  assert.equal(plan.reduce((n, r) => n + r.length, 0), bytes.byteLength, 'the requests cover the blob, end to end');

  const reader = new CountingReader(bytes);
  const ahead = new PackReadAhead(descriptor, reader, { parallel: 3, requestBytes: 200 * KiB });
  // before any replay: the requests run (the first alone, then up to 3 at once)
  while (reader.requests.length < plan.length) await new Promise((resolve) => setTimeout(resolve, 2));
  assert.deepEqual(reader.requests, plan.map(({ offset, length }) => ({ offset, length })));
  assert.ok(reader.maxInflight > 1 && reader.maxInflight <= 3, `${reader.maxInflight} at once`);
  const pinned = new PinnedFileRanges();
  const result = await replayPrefetchPack(descriptor, ranges, LAYERS, ahead, pinned, () => undefined, () => undefined, { parallel: 3, requestBytes: 200 * KiB });
  assert.equal(result.error, undefined);
  assert.equal(result.ranges, ranges.length);
  assert.equal(reader.requests.length, plan.length, 'the replay made no request of its own');
  const f = ranges[3]!;
  const got = new Uint8Array(f.length);
  assert.equal(pinned.readInto(LAYERS[f.layer]!, f.path, f.offset, got), true);
  assert.deepEqual(got, data.get(`${f.layer}:${f.path}`)!.subarray(f.offset, f.offset + f.length));
  // a read that is not one of the requests goes to the blob
  assert.deepEqual(await ahead.readRange(10, 5), bytes.subarray(10, 15));
  assert.equal(reader.requests.length, plan.length + 1);

  // the third request fails: the replay reports it and keeps what arrived before, as a plain replay does
  class FailingReader extends CountingReader {
    override async readRange(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
      if (offset === plan[2]!.offset) throw new Error('connection reset');
      return super.readRange(offset, length, options);
    }
  }
  const failing = new FailingReader(bytes);
  const pinned2 = new PinnedFileRanges();
  const broken = await replayPrefetchPack(descriptor, ranges, LAYERS, new PackReadAhead(descriptor, failing, { parallel: 3, requestBytes: 200 * KiB }), pinned2, () => undefined, () => undefined, {
    parallel: 3,
    requestBytes: 200 * KiB,
  });
  assert.ok(isImgstreamError(broken.error, ErrorCode.CORRUPT_DATA) || isImgstreamError(broken.error, ErrorCode.CLOSED), String(broken.error));
  assert.ok(broken.missing.length > 0 && broken.ranges > 0 && broken.ranges + broken.missing.length === ranges.length, `${broken.ranges} pinned, ${broken.missing.length} missing`);
  const first = ranges[0]!;
  assert.equal(pinned2.readInto(LAYERS[first.layer]!, first.path, first.offset, new Uint8Array(1)), true, 'the first request\'s ranges stay');

  // close() aborts what is in flight
  const slow = new CountingReader(bytes);
  const closing = new PackReadAhead(descriptor, slow, { parallel: 3, requestBytes: 200 * KiB });
  await closing.close();
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(slow.requests.length, 1, 'after close() no request starts');
});

test('prefetch pack: the page-cache warm-up reads each joined range but its read-ahead extension, unless the range ends at the end of its file', () => {
  const data = files();
  const ranges = packRangesOf(recorded(), sizeOf(data), LAYOUT);
  const warm = packWarmupPieces(ranges, LAYERS, LAYOUT.extend, (d, path) => sizeOf(data)(LAYERS.indexOf(d), path));
  // f8: [0, 500 KiB) read, [0, 512 KiB) + 64 KiB pinned in three pieces; the last 64 KiB (the
  // extension) are left to the container's reads, piece by piece as they are pinned
  const f8 = ranges.filter((f) => f.path === 'f8');
  assert.deepEqual(f8.map((f) => [f.offset / KiB, f.length / KiB]), [[0, 256], [256, 256], [512, 64]]);
  assert.deepEqual(warm(LAYERS[0]!, [f8[2]!, f8[0]!]), [{ path: 'f8', offset: 0, length: 256 * KiB }]);
  assert.deepEqual(warm(LAYERS[0]!, [f8[1]!]), [{ path: 'f8', offset: 256 * KiB, length: 256 * KiB }]);
  // f5 (layer 1): [0, 100 KiB) read, [0, 192 KiB) pinned, [0, 128 KiB) warmed
  const f5 = ranges.find((f) => f.path === 'f5')!;
  assert.deepEqual(warm(LAYERS[1]!, [f5]), [{ path: 'f5', offset: 0, length: 128 * KiB }]);
  assert.deepEqual(warm(LAYERS[0]!, [f5]), [], 'a file of that name in another layer is not this one');
  // f2 runs to its end (374 KiB): nothing past it to read ahead, warmed whole
  const f2 = ranges.filter((f) => f.path === 'f2');
  assert.equal(f2[f2.length - 1]!.offset + f2[f2.length - 1]!.length, data.get('0:f2')!.byteLength);
  assert.deepEqual(warm(LAYERS[0]!, f2), f2.map(({ path, offset, length }) => ({ path, offset, length })));
});
