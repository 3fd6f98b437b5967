import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { ErrorCode } from '@imgstream/core';
import { SnapshotLabel, SnapshotterServer, type RemoteSnapshotDecider, type RequestEvent } from '@imgstream/snapshotter';
import { tempDir, type Teardown } from '../../../test/helpers/tmp.ts';
import { snapshotsClient, type SnapshotsClient, type WireInfo, type WireMount } from './snapshots-client.ts';

const KIND = { VIEW: 1, ACTIVE: 2, COMMITTED: 3 };
const SN = 'imgstream';

async function startServer(t: Teardown, dir: string, extra: { decider?: RemoteSnapshotDecider; listBatchSize?: number } = {}) {
  const root = join(dir, 'root');
  const socket = join(dir, 'snapshotter.sock');
  const server = new SnapshotterServer({
    rootDir: root,
    overlayIndexOff: true,
    listBatchSize: extra.listBatchSize ?? 100,
    ...(extra.decider ? { remoteSnapshotDecider: extra.decider } : {}),
  });
  t.after(() => server.close());
  const requests: RequestEvent[] = [];
  server.on('request', (e) => requests.push(e));
  await server.listen(socket);
  const client = snapshotsClient(socket);
  t.after(() => client.close());
  return { server, client, root, socket, requests };
}

async function rejectsWith(p: Promise<unknown>, code: status, imgstreamCode?: string): Promise<void> {
  await assert.rejects(p, (err: { code?: number; metadata?: { get(k: string): unknown[] } }) => {
    assert.equal(err.code, code, `expected gRPC status ${status[code]}, got ${String(err.code)}: ${String((err as Error).message)}`);
    if (imgstreamCode) assert.deepEqual(err.metadata?.get('imgstream-error-code'), [imgstreamCode]);
    return true;
  });
}

const mounts = async (c: SnapshotsClient, method: string, req: object): Promise<WireMount[]> => (await c.call<{ mounts: WireMount[] }>(method, { snapshotter: SN, ...req })).mounts;
const statInfo = async (c: SnapshotsClient, key: string): Promise<WireInfo> => (await c.call<{ info: WireInfo }>('Stat', { snapshotter: SN, key })).info;
const listNames = async (c: SnapshotsClient, filters: string[] = []): Promise<string[]> =>
  (await c.list({ snapshotter: SN, filters }))
    .flatMap((m) => m.info.map((i) => i.name))
    .sort();

test('snapshot lifecycle over gRPC on a unix socket: every RPC, overlay semantics and the error codes containerd expects', async (t) => {
  const dir = await tempDir(t, 'imgstream-snap-');
  const { client: c, root, requests } = await startServer(t, dir, { listBatchSize: 2 });
  const snap = (id: string, sub = 'fs') => join(root, 'snapshots', id, sub);

  // Prepare without a parent: a writable bind mount of the snapshot's own directory.
  const m1 = await mounts(c, 'Prepare', { key: 'k1', parent: '', labels: { 'containerd.io/snapshot/a': 'x', empty: '' } });
  assert.deepEqual(m1, [{ type: 'bind', source: snap('1'), target: '', options: ['rw', 'rbind'] }]);
  assert.deepEqual(await mounts(c, 'Mounts', { key: 'k1' }), m1);
  const s1 = await statInfo(c, 'k1');
  assert.equal(s1.kind, KIND.ACTIVE);
  assert.equal(s1.parent, '');
  assert.deepEqual(s1.labels, { 'containerd.io/snapshot/a': 'x' }, 'empty label values are dropped as containerd does');
  assert.ok(s1.created_at.seconds > 1_600_000_000 && s1.created_at.seconds <= Date.now() / 1000 + 1);
  await stat(snap('1', 'work'));

  // Usage of an active snapshot is measured now: fs dir + one 10000-byte file + one dir.
  await writeFile(join(snap('1'), 'hello.txt'), 'x'.repeat(10_000));
  await mkdir(join(snap('1'), 'etc'));
  const u1 = await c.call<{ size: number; inodes: number }>('Usage', { snapshotter: SN, key: 'k1' });
  assert.equal(u1.inodes, 3);
  assert.ok(u1.size >= 10_000 + 4096, `usage ${u1.size}`);

  // Commit: same directory, labels replaced, usage recorded, the key is gone.
  await c.call('Commit', { snapshotter: SN, name: 'base', key: 'k1', labels: { 'containerd.io/snapshot.ref': 'sha256:base' } });
  await rejectsWith(statInfo(c, 'k1'), status.NOT_FOUND, ErrorCode.SNAPSHOT_NOT_FOUND);
  const base = await statInfo(c, 'base');
  assert.equal(base.kind, KIND.COMMITTED);
  assert.deepEqual(base.labels, { 'containerd.io/snapshot.ref': 'sha256:base' });
  await writeFile(join(snap('1'), 'after-commit'), 'y'.repeat(50_000));
  assert.deepEqual(await c.call('Usage', { snapshotter: SN, key: 'base' }), u1, 'committed usage is the one recorded at commit');
  assert.equal(await readFile(join(snap('1'), 'hello.txt'), 'utf8'), 'x'.repeat(10_000));

  // Active on a committed parent: overlay with workdir, upperdir, lowerdir.
  const m2 = await mounts(c, 'Prepare', { key: 'k2', parent: 'base' });
  assert.deepEqual(m2, [{ type: 'overlay', source: 'overlay', target: '', options: ['index=off', `workdir=${snap('2', 'work')}`, `upperdir=${snap('2')}`, `lowerdir=${snap('1')}`] }]);
  await c.call('Commit', { snapshotter: SN, name: 'layer2', key: 'k2' });
  const m3 = await mounts(c, 'Prepare', { key: 'k3', parent: 'layer2' });
  assert.deepEqual(m3[0]!.options, ['index=off', `workdir=${snap('3', 'work')}`, `upperdir=${snap('3')}`, `lowerdir=${snap('2')}:${snap('1')}`]);

  // Views: one layer is a read-only bind mount, several are a lowerdir-only overlay.
  assert.deepEqual(await mounts(c, 'View', { key: 'v1', parent: 'base' }), [{ type: 'bind', source: snap('1'), target: '', options: ['ro', 'rbind'] }]);
  assert.deepEqual(await mounts(c, 'View', { key: 'v2', parent: 'layer2' }), [
    { type: 'overlay', source: 'overlay', target: '', options: ['index=off', `lowerdir=${snap('2')}:${snap('1')}`] },
  ]);
  assert.deepEqual(await mounts(c, 'View', { key: 'v0', parent: '' }), [{ type: 'bind', source: snap('6'), target: '', options: ['ro', 'rbind'] }]);
  assert.equal((await statInfo(c, 'v2')).kind, KIND.VIEW);
  assert.equal((await statInfo(c, 'v2')).parent, 'layer2');
  await assert.rejects(stat(snap('5', 'work')), { code: 'ENOENT' }, 'views have no work dir');

  // Create errors.
  await rejectsWith(mounts(c, 'Prepare', { key: 'k3', parent: '' }), status.ALREADY_EXISTS, ErrorCode.SNAPSHOT_ALREADY_EXISTS);
  await rejectsWith(mounts(c, 'Prepare', { key: 'x', parent: 'missing' }), status.NOT_FOUND, ErrorCode.SNAPSHOT_NOT_FOUND);
  await rejectsWith(mounts(c, 'Prepare', { key: 'x', parent: 'k3' }), status.INVALID_ARGUMENT, ErrorCode.SNAPSHOT_INVALID_ARGUMENT);
  await rejectsWith(mounts(c, 'View', { key: 'x', parent: 'v1' }), status.INVALID_ARGUMENT);
  await rejectsWith(mounts(c, 'Prepare', { key: '', parent: '' }), status.INVALID_ARGUMENT);
  await rejectsWith(mounts(c, 'Prepare', { key: 'x', parent: '', labels: { big: 'v'.repeat(5000) } }), status.INVALID_ARGUMENT);
  await rejectsWith(mounts(c, 'Mounts', { key: 'missing' }), status.NOT_FOUND);
  await rejectsWith(mounts(c, 'Mounts', { key: 'base' }), status.FAILED_PRECONDITION, ErrorCode.SNAPSHOT_WRONG_KIND);

  // Commit errors.
  await rejectsWith(c.call('Commit', { snapshotter: SN, name: 'base', key: 'k3' }), status.ALREADY_EXISTS);
  await rejectsWith(c.call('Commit', { snapshotter: SN, name: 'n', key: 'missing' }), status.NOT_FOUND);
  await rejectsWith(c.call('Commit', { snapshotter: SN, name: 'n', key: 'v1' }), status.FAILED_PRECONDITION, ErrorCode.SNAPSHOT_WRONG_KIND);
  await rejectsWith(c.call('Commit', { snapshotter: SN, name: 'n', key: 'layer2' }), status.FAILED_PRECONDITION);

  // Update: one label by path, all labels, no mask, errors.
  let u = (await c.call<{ info: WireInfo }>('Update', { snapshotter: SN, info: { name: 'layer2', labels: { a: '1', b: '2', ignored: '3' } }, update_mask: { paths: ['labels.a', 'labels.b'] } })).info;
  assert.deepEqual(u.labels, { a: '1', b: '2' });
  assert.equal(u.kind, KIND.COMMITTED);
  u = (await c.call<{ info: WireInfo }>('Update', { snapshotter: SN, info: { name: 'layer2', labels: { b: '' } }, update_mask: { paths: ['labels.a', 'labels.b'] } })).info;
  assert.deepEqual(u.labels, {}, 'labels.K with no or empty value deletes K');
  u = (await c.call<{ info: WireInfo }>('Update', { snapshotter: SN, info: { name: 'layer2', labels: { c: '3' } }, update_mask: { paths: ['labels'] } })).info;
  assert.deepEqual(u.labels, { c: '3' });
  u = (await c.call<{ info: WireInfo }>('Update', { snapshotter: SN, info: { name: 'layer2', labels: { d: '4' } } })).info;
  assert.deepEqual(u.labels, { d: '4' });
  assert.deepEqual((await statInfo(c, 'layer2')).labels, { d: '4' });
  await rejectsWith(c.call('Update', { snapshotter: SN, info: { name: 'layer2', parent: 'x' }, update_mask: { paths: ['parent'] } }), status.INVALID_ARGUMENT);
  await rejectsWith(c.call('Update', { snapshotter: SN, info: { name: 'missing' }, update_mask: { paths: ['labels'] } }), status.NOT_FOUND);

  // List, streamed in batches of two, with containerd filters.
  const all = await c.list({ snapshotter: SN, filters: [] });
  assert.deepEqual(
    all.map((m) => m.info.length),
    [2, 2, 2],
  );
  assert.deepEqual(await listNames(c), ['base', 'k3', 'layer2', 'v0', 'v1', 'v2']);
  assert.deepEqual(await listNames(c, ['kind==committed']), ['base', 'layer2']);
  assert.deepEqual(await listNames(c, ['kind==view,parent=="base"']), ['v1']);
  assert.deepEqual(await listNames(c, ['labels."containerd.io/snapshot.ref"==sha256:base,parent==""']), ['base']);
  assert.deepEqual(await listNames(c, ['labels.d', 'name~=^v[12]$']), ['layer2', 'v1', 'v2']);
  assert.deepEqual(await listNames(c, ['kind!=view']), ['base', 'k3', 'layer2']);
  await rejectsWith(listNames(c, ['kind==']), status.INVALID_ARGUMENT, ErrorCode.SNAPSHOT_INVALID_ARGUMENT);
  await rejectsWith(listNames(c, ['kind=~x']), status.INVALID_ARGUMENT);

  // Remove: parents with children cannot go; leaves can, and their directories go with them.
  await rejectsWith(c.call('Remove', { snapshotter: SN, key: 'base' }), status.FAILED_PRECONDITION, ErrorCode.SNAPSHOT_HAS_CHILDREN);
  await rejectsWith(c.call('Remove', { snapshotter: SN, key: 'missing' }), status.NOT_FOUND);
  await rejectsWith(c.call('Usage', { snapshotter: SN, key: 'missing' }), status.NOT_FOUND);
  for (const key of ['k3', 'v2', 'layer2']) await c.call('Remove', { snapshotter: SN, key });
  await assert.rejects(stat(snap('3')), { code: 'ENOENT' });
  await rejectsWith(c.call('Remove', { snapshotter: SN, key: 'base' }), status.FAILED_PRECONDITION, ErrorCode.SNAPSHOT_HAS_CHILDREN); // v1 is still a child of base
  await c.call('Remove', { snapshotter: SN, key: 'v1' });
  await c.call('Remove', { snapshotter: SN, key: 'base' });
  assert.deepEqual(await listNames(c), ['v0']);

  // Cleanup removes directories the metadata does not know (crash leftovers), nothing else.
  await mkdir(join(root, 'snapshots', 'new-leftover', 'fs'), { recursive: true });
  await mkdir(join(root, 'snapshots', '77', 'fs'), { recursive: true });
  await c.call('Cleanup', { snapshotter: SN });
  assert.deepEqual(await readdir(join(root, 'snapshots')), ['6']);

  // Every call was reported as a request event.
  const methods = new Set(requests.map((r) => r.method));
  assert.deepEqual([...methods].sort(), ['Cleanup', 'Commit', 'List', 'Mounts', 'Prepare', 'Remove', 'Stat', 'Update', 'Usage', 'View']);
  assert.ok(requests.some((r) => r.method === 'Remove' && r.error === ErrorCode.SNAPSHOT_HAS_CHILDREN));
});

test('metadata survives a restart, ids left on disk by a crash are never reused, and a stale socket is replaced', async (t) => {
  const dir = await tempDir(t, 'imgstream-snap-');
  const first = await startServer(t, dir);
  await mounts(first.client, 'Prepare', { key: 'a', parent: '' });
  await first.client.call('Commit', { snapshotter: SN, name: 'A', key: 'a', labels: { l: 'v' } });
  await mounts(first.client, 'Prepare', { key: 'b', parent: 'A' });
  const before = await statInfo(first.client, 'A');
  first.client.close();
  await first.server.close();

  // A crash after renaming a snapshot directory into place but before the metadata write.
  await mkdir(join(first.root, 'snapshots', '9', 'fs'), { recursive: true });
  const meta = JSON.parse(await readFile(join(first.root, 'metadata.json'), 'utf8')) as { version: number; snapshots: Record<string, { id: string }> };
  assert.equal(meta.version, 1);
  assert.deepEqual(Object.keys(meta.snapshots).sort(), ['A', 'b']);

  // and a socket file left behind by a killed server: nobody listens on it, so it is replaced
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', first.socket]);
  assert.ok((await stat(first.socket)).isSocket());

  const second = await startServer(t, dir);
  assert.deepEqual(await statInfo(second.client, 'A'), before);
  assert.equal((await statInfo(second.client, 'b')).parent, 'A');
  const m = await mounts(second.client, 'Prepare', { key: 'c', parent: 'A' });
  assert.ok(m[0]!.options.includes(`upperdir=${join(second.root, 'snapshots', '10', 'fs')}`), m[0]!.options.join(' '));
  await second.client.call('Cleanup', { snapshotter: SN });
  assert.deepEqual((await readdir(join(second.root, 'snapshots'))).sort(), ['1', '10', '2']);
  const files = await readdir(second.root);
  assert.deepEqual(files.sort(), ['metadata.json', 'snapshots'], 'no temp files left behind');
});

test('remote snapshot decider: a remote layer is committed under its chain ID and Prepare answers AlreadyExists', async (t) => {
  const dir = await tempDir(t, 'imgstream-snap-');
  const layerDir = join(dir, 'layer-cache', 'sha256-l1');
  await mkdir(layerDir, { recursive: true });
  const asked: string[] = [];
  const decider: RemoteSnapshotDecider = {
    async decide(req) {
      asked.push(req.layer.layerDigest ?? '');
      if (req.layer.layerDigest === 'sha256:l1') return { remote: true, contentDir: layerDir, labels: { 'containerd.io/snapshot/imgstream.source': 'test' } };
      if (req.layer.layerDigest === 'sha256:boom') throw new Error('index fetch failed');
      return { remote: false, reason: 'no index' };
    },
  };
  const { client: c, server, root } = await startServer(t, dir, { decider });
  const decisions: Array<{ remote: boolean; reason?: string }> = [];
  server.snapshotter.on('remote-decision', (e) => decisions.push(e));
  const criLabels = (digest: string, chain: string) => ({
    [SnapshotLabel.TARGET_REF]: chain,
    [SnapshotLabel.CRI_IMAGE_REF]: '127.0.0.1:5000/app:1',
    [SnapshotLabel.CRI_MANIFEST_DIGEST]: 'sha256:m',
    [SnapshotLabel.CRI_LAYER_DIGEST]: digest,
    [SnapshotLabel.CRI_IMAGE_LAYERS]: `${digest},sha256:l2`,
  });

  await rejectsWith(mounts(c, 'Prepare', { key: 'extract-1', parent: '', labels: criLabels('sha256:l1', 'chain1') }), status.ALREADY_EXISTS);
  // what containerd's metadata layer looks for after AlreadyExists:
  const found = (await c.list({ snapshotter: SN, filters: ['labels."containerd.io/snapshot.ref"==chain1,parent==""'] })).flatMap((m) => m.info);
  assert.equal(found.length, 1);
  assert.equal(found[0]!.name, 'chain1');
  assert.equal(found[0]!.kind, KIND.COMMITTED);
  assert.equal(found[0]!.labels[SnapshotLabel.REMOTE], 'sha256:l1');
  assert.equal(found[0]!.labels['containerd.io/snapshot/imgstream.source'], 'test');
  await rejectsWith(statInfo(c, 'extract-1'), status.NOT_FOUND);
  // a duplicate Prepare for the same chain is AlreadyExists without asking again
  await rejectsWith(mounts(c, 'Prepare', { key: 'extract-1b', parent: '', labels: criLabels('sha256:l1', 'chain1') }), status.ALREADY_EXISTS);
  assert.deepEqual(asked, ['sha256:l1']);

  // not streamable and a failing decider: ordinary active snapshots, the reason is reported
  const m2 = await mounts(c, 'Prepare', { key: 'extract-2', parent: 'chain1', labels: criLabels('sha256:l2', 'chain2') });
  assert.ok(m2[0]!.options.includes(`lowerdir=${layerDir}`), 'the remote layer content dir is the lower dir');
  await mounts(c, 'Prepare', { key: 'extract-3', parent: '', labels: criLabels('sha256:boom', 'chain3') });
  assert.deepEqual(
    decisions.map((d) => [d.remote, d.reason]),
    [
      [true, undefined],
      [false, 'no index'],
      [false, 'decider failed: index fetch failed'],
    ],
  );
  // the remote snapshot owns no directory; removing it leaves the content dir alone
  await c.call('Remove', { snapshotter: SN, key: 'extract-2' });
  await c.call('Remove', { snapshotter: SN, key: 'chain1' });
  await stat(layerDir);
  assert.deepEqual((await readdir(join(root, 'snapshots'))).sort(), ['3']);
});

test('the server refuses a live socket, closes idempotently and refuses use after close', async (t) => {
  const dir = await tempDir(t, 'imgstream-snap-');
  const { server, socket, client } = await startServer(t, dir);
  const other = new SnapshotterServer({ rootDir: join(dir, 'root2') });
  t.after(() => other.close());
  await assert.rejects(other.listen(socket), { code: ErrorCode.INVALID_OPTION });
  await assert.rejects(other.listen('relative.sock'), { code: ErrorCode.INVALID_OPTION });
  assert.throws(() => new SnapshotterServer({ rootDir: 'rel' }), { code: ErrorCode.INVALID_OPTION });
  assert.throws(() => new SnapshotterServer({ listBatchSize: 0 }), { code: ErrorCode.INVALID_OPTION });
  await mounts(client, 'Prepare', { key: 'a', parent: '' });
  await Promise.all([server.close(), server.close()]);
  await assert.rejects(stat(socket), { code: 'ENOENT' });
  await assert.rejects(server.listen(socket), { code: ErrorCode.CLOSED });
  await assert.rejects(server.snapshotter.stat('a'), { code: ErrorCode.CLOSED });

  const ac = new AbortController();
  const third = new SnapshotterServer({ rootDir: join(dir, 'root3'), signal: ac.signal });
  const closed = new Promise<void>((resolve) => third.once('closed', () => resolve()));
  await third.listen(join(dir, 'third.sock'));
  ac.abort();
  await closed;
  await assert.rejects(stat(join(dir, 'third.sock')), { code: 'ENOENT' });
});
