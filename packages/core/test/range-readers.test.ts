import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BufferRangeReader, ErrorCode, FileRangeReader, isImgstreamError } from '@imgstream/core';

test('BufferRangeReader and FileRangeReader read exact ranges, short at the end, and honour abort and close', async (t) => {
  const data = new Uint8Array(10_000).map((_, i) => i % 251);
  const dir = await mkdtemp(join(tmpdir(), 'imgstream-rr-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'blob'), data);
  const file = await FileRangeReader.open(join(dir, 'blob'));
  t.after(() => file.close());
  for (const r of [new BufferRangeReader(data), file]) {
    assert.equal(r.size, 10_000);
    assert.deepEqual(await r.readRange(100, 50), data.subarray(100, 150));
    assert.deepEqual(await r.readRange(9_990, 50), data.subarray(9_990));
    assert.equal((await r.readRange(20_000, 5)).byteLength, 0);
    await assert.rejects(r.readRange(-1, 5), (e) => isImgstreamError(e, ErrorCode.RANGE_NOT_SATISFIABLE));
    const ac = new AbortController();
    const reason = new Error('why');
    ac.abort(reason);
    await assert.rejects(r.readRange(0, 5, { signal: ac.signal }), (e) => e === reason);
  }
  const parts: Uint8Array[] = [];
  for await (const c of file.stream(3000)) parts.push(c);
  assert.deepEqual(new Uint8Array(Buffer.concat(parts)), data);
  await file.close();
  await file.close();
  await assert.rejects(file.readRange(0, 1), (e) => isImgstreamError(e, ErrorCode.CLOSED));
});
