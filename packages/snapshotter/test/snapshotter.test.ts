import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode } from '@imgstream/core';
import { Snapshotter } from '@imgstream/snapshotter';
import { tempDir } from '../../../test/helpers/tmp.ts';

test('concurrent Prepares: one key wins once, different keys get distinct directories', async (t) => {
  const root = join(await tempDir(t, 'imgstream-snap-'), 'root');
  const s = new Snapshotter({ rootDir: root, clock: () => 1_700_000_000_123 });
  t.after(() => s.close());
  const same = await Promise.allSettled(Array.from({ length: 8 }, () => s.prepare('dup', '')));
  assert.equal(same.filter((r) => r.status === 'fulfilled').length, 1);
  for (const r of same.filter((r): r is PromiseRejectedResult => r.status === 'rejected')) assert.equal(r.reason.code, ErrorCode.SNAPSHOT_ALREADY_EXISTS);
  const many = await Promise.all(Array.from({ length: 20 }, (_, i) => s.prepare(`k${i}`, '')));
  assert.equal(new Set(many.map((m) => m[0]!.source)).size, 20);
  // only the winners' directories exist (ids of failed creates are never made or are removed)
  assert.equal((await readdir(join(root, 'snapshots'))).length, 21);
  const info = await s.stat('k3');
  assert.equal(info.createdAt.getTime(), 1_700_000_000_123, 'the injected clock stamps snapshots');
});

test('corrupt metadata is refused with IMGSTREAM_SNAPSHOT_METADATA_CORRUPT, not silently reset', async (t) => {
  const root = join(await tempDir(t, 'imgstream-snap-'), 'root');
  await mkdir(root, { recursive: true });
  for (const text of ['{"version":1,"nextId":1,"snap', '{"version":2,"nextId":1,"snapshots":{}}', '{"version":1,"nextId":1,"snapshots":{"a":{"id":"1","kind":"active","parent":"gone","labels":{},"createdAtMs":0,"updatedAtMs":0}}}']) {
    await writeFile(join(root, 'metadata.json'), text);
    const s = new Snapshotter({ rootDir: root });
    await assert.rejects(s.ready(), { code: ErrorCode.SNAPSHOT_METADATA_CORRUPT }, text);
  }
});

test('usage of an active snapshot honours an abort signal, rejecting with its reason', async (t) => {
  const root = join(await tempDir(t, 'imgstream-snap-'), 'root');
  const s = new Snapshotter({ rootDir: root });
  t.after(() => s.close());
  const [m] = await s.prepare('a', '');
  for (let i = 0; i < 50; i++) await writeFile(join(m!.source, `f${i}`), 'x');
  const reason = new Error('stop');
  await assert.rejects(s.usage('a', { signal: AbortSignal.abort(reason) }), (err) => err === reason);
  assert.equal((await s.usage('a')).inodes, 51);
});
