import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode } from '@imgstream/core';
import { SnapshotLabel, Snapshotter, type RemoteSnapshotDecider } from '@imgstream/snapshotter';
import { setImmediate } from 'node:timers/promises';
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

test('concurrent Prepares of one layer share one decider call; it is aborted only when every waiter gave up', async (t) => {
  const dir = await tempDir(t, 'imgstream-snap-');
  const layerDir = join(dir, 'layer');
  await mkdir(layerDir);
  let calls = 0;
  let release: (() => void) | undefined;
  const seenSignals: AbortSignal[] = [];
  const decider: RemoteSnapshotDecider = {
    async decide(_req, { signal }) {
      calls++;
      seenSignals.push(signal!);
      await new Promise<void>((resolve, reject) => {
        release = resolve;
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
      return { remote: true, contentDir: layerDir };
    },
  };
  const s = new Snapshotter({ rootDir: join(dir, 'root'), remoteSnapshotDecider: decider });
  t.after(() => s.close());
  await s.ready();
  const labels = { [SnapshotLabel.TARGET_REF]: 'chain-a', [SnapshotLabel.CRI_LAYER_DIGEST]: 'sha256:a' };

  const all = Promise.allSettled([1, 2, 3].map((i) => s.prepare(`extract-${i}`, '', { labels })));
  await setImmediate();
  assert.equal(calls, 1);
  release!();
  const results = await all;
  assert.deepEqual(
    results.map((r) => (r.status === 'rejected' ? (r.reason as { code: string }).code : 'ok')),
    Array(3).fill(ErrorCode.SNAPSHOT_ALREADY_EXISTS),
  );
  assert.equal((await s.stat('chain-a')).labels[SnapshotLabel.REMOTE], 'sha256:a');

  // two waiters for chain-b: one aborting keeps the call alive, both aborting cancels it
  const labelsB = { [SnapshotLabel.TARGET_REF]: 'chain-b', [SnapshotLabel.CRI_LAYER_DIGEST]: 'sha256:b' };
  const a1 = new AbortController();
  const a2 = new AbortController();
  const p1 = s.prepare('b1', 'chain-a', { labels: labelsB, signal: a1.signal });
  const p2 = s.prepare('b2', 'chain-a', { labels: labelsB, signal: a2.signal });
  await setImmediate();
  assert.equal(calls, 2);
  const r1 = new Error('first gave up');
  a1.abort(r1);
  await assert.rejects(p1, (e) => e === r1);
  assert.equal(seenSignals[1]!.aborted, false);
  const r2 = new Error('second gave up');
  a2.abort(r2);
  await assert.rejects(p2, (e) => e === r2);
  assert.equal(seenSignals[1]!.aborted, true);
  assert.equal(seenSignals[1]!.reason, r2);
  await assert.rejects(s.stat('chain-b'), { code: ErrorCode.SNAPSHOT_NOT_FOUND });
});

test("a decider's lowerDir moves a remote layer's files at Mounts time (FUSE view -> local cache dir)", async (t) => {
  const dir = await tempDir(t, 'imgstream-snap-');
  const fuseView = join(dir, 'fuse-view');
  const localDir = join(dir, 'local');
  await mkdir(fuseView);
  await mkdir(localDir);
  let complete = false;
  const asked: string[] = [];
  const decider: RemoteSnapshotDecider = {
    decide: async () => ({ remote: true, contentDir: fuseView }),
    lowerDir: async (snap) => {
      asked.push(`${snap.name} ${snap.contentDir} ${snap.labels[SnapshotLabel.REMOTE]}`);
      return complete ? localDir : snap.contentDir;
    },
  };
  const s = new Snapshotter({ rootDir: join(dir, 'root'), remoteSnapshotDecider: decider, overlayIndexOff: false });
  t.after(() => s.close());
  const labels = { [SnapshotLabel.TARGET_REF]: 'chain-1', [SnapshotLabel.STARGZ_LAYER_DIGEST]: `sha256:${'a'.repeat(64)}`, [SnapshotLabel.STARGZ_IMAGE_REF]: 'r/x:1' };
  await assert.rejects(s.prepare('extract-1', '', { labels }), { code: ErrorCode.SNAPSHOT_ALREADY_EXISTS });
  // a view of one layer binds it; an active snapshot above it overlays it
  const [view] = await s.view('v1', 'chain-1');
  assert.equal(view!.source, fuseView);
  complete = true;
  const [active] = await s.prepare('c1', 'chain-1');
  assert.ok(active!.options.includes(`lowerdir=${localDir}`), JSON.stringify(active));
  const again = await s.mounts('v1');
  assert.equal(again[0]!.source, localDir);
  // asked for View v1, Prepare c1 (its parent's dir, and its mounts) and Mounts v1
  assert.ok(asked.length >= 3, String(asked.length));
  assert.ok(asked.every((a) => a === `chain-1 ${fuseView} sha256:${'a'.repeat(64)}`), JSON.stringify(asked));
  // a decider whose lowerDir fails fails the call (no silent fallback to a dead mount)
  decider.lowerDir = async () => {
    throw new Error('fuse server down');
  };
  await assert.rejects(s.mounts('c1'), /fuse server down/);
});
