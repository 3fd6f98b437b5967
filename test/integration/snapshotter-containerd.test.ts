import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { SnapshotLabel, SnapshotterServer, type RemoteSnapshotDecider, type RequestEvent } from '@imgstream/snapshotter';
import { startRegistry } from '../helpers/registry.ts';
import { pushTreeImage } from '../helpers/image-builder.ts';
import { makeLab, startContainerd, unmountBelow } from '../helpers/containerd.ts';

const chainId = (diffIds: readonly string[]): string[] => {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out.at(-1);
    out.push(prev === undefined ? d : `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}`);
  }
  return out;
};

test('a real containerd 1.6 pulls and runs an image through the imgstream proxy snapshotter', { timeout: 150_000 }, async (t) => {
  const registry = await startRegistry(t);
  const image = await pushTreeImage(registry.url, 'tiny:1', [
    {
      'bin/busybox': { copyFrom: '/usr/bin/busybox' },
      'etc/hello.txt': 'hello from layer 1\n',
      'etc/gone.txt': 'removed by layer 2\n',
      'data/keep.txt': 'layer 1 version\n',
      'opaque/old.txt': 'hidden by an opaque dir\n',
      tmp: { dir: true },
    },
    {
      'etc/layer2.txt': 'hello from layer 2\n',
      'etc/gone.txt': { whiteout: true },
      'data/keep.txt': 'layer 2 version\n',
      opaque: { opaque: true },
      'opaque/new.txt': 'only me\n',
    },
  ]);

  const lab = await makeLab(t, 'imgstream-ctd-');
  const socket = join(lab.dir, 'imgstream.sock');
  const server = new SnapshotterServer({ rootDir: join(lab.dir, 'imgstream') });
  lab.defer(() => server.close());
  const requests: RequestEvent[] = [];
  server.on('request', (e) => requests.push(e));
  await server.listen(socket);
  const ctd = await startContainerd(lab, { proxySnapshotters: { imgstream: socket } });

  // Pull: containerd unpacks each layer into a snapshot it Prepares, mounts and Commits through us.
  await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'imgstream', image.ref], { timeoutMs: 60_000 });
  const chains = chainId(image.diffIds);
  const committed = (await server.snapshotter.list(['kind==committed'])).sort((a, b) => a.parent.length - b.parent.length);
  assert.equal(committed.length, 2, JSON.stringify(committed));
  assert.ok(committed[0]!.name.endsWith(`/${chains[0]}`), committed[0]!.name);
  assert.equal(committed[0]!.parent, '');
  assert.ok(committed[1]!.name.endsWith(`/${chains[1]}`), committed[1]!.name);
  assert.equal(committed[1]!.parent, committed[0]!.name);
  const busyboxUsage = await server.snapshotter.usage(committed[0]!.name);
  assert.ok(busyboxUsage.sizeBytes >= 1_982_256, `layer 1 usage ${busyboxUsage.sizeBytes}`);

  // Run: the rootfs is our overlay of both layers plus a writable upper dir.
  const script = [
    'cat /etc/hello.txt /etc/layer2.txt /data/keep.txt',
    'ls /etc',
    'ls /opaque',
    'test -e /etc/gone.txt && echo gone-still-there',
    'echo written > /tmp/w && cat /tmp/w',
  ].join('; ');
  const run = await ctd.ctr(['run', '--rm', '--snapshotter', 'imgstream', image.ref, 'tiny-1', '/bin/busybox', 'sh', '-c', script], { timeoutMs: 60_000 });
  assert.equal(run.stdout, 'hello from layer 1\nhello from layer 2\nlayer 2 version\nhello.txt\nlayer2.txt\nnew.txt\nwritten\n', `${run.stdout}\n${run.stderr}`);

  // A second container, started without a shell, to see plain exec and cleanup of the first.
  const cat = await ctd.ctr(['run', '--rm', '--snapshotter', 'imgstream', image.ref, 'tiny-2', '/bin/busybox', 'cat', '/etc/hello.txt'], { timeoutMs: 60_000 });
  assert.equal(cat.stdout, 'hello from layer 1\n');

  // containerd's own snapshot commands go through our Stat, List and Usage.
  const ls = await ctd.ctr(['snapshots', '--snapshotter', 'imgstream', 'ls']);
  assert.match(ls.stdout, new RegExp(`${chains[1]!.replace(':', '\\:')}\\s+${chains[0]!.replace(':', '\\:')}\\s+Committed`));
  const info = JSON.parse((await ctd.ctr(['snapshots', '--snapshotter', 'imgstream', 'info', chains[1]!])).stdout) as { Kind: string; Parent: string };
  assert.equal(info.Parent, chains[0]);
  const usage = await ctd.ctr(['snapshots', '--snapshotter', 'imgstream', 'usage', chains[0]!]);
  assert.match(usage.stdout, new RegExp(`${chains[0]!.replace(':', '\\:')}\\s+\\d`));

  // The --rm runs removed their active snapshots (containerd's garbage collector calls Remove
  // asynchronously): only the two layers remain, nothing mounted.
  const settled = Date.now() + 20_000;
  while ((await server.snapshotter.list()).length > 2 && Date.now() < settled) await sleep(50);
  assert.deepEqual(
    (await server.snapshotter.list()).map((i) => i.kind),
    ['committed', 'committed'],
  );
  assert.deepEqual(await unmountBelow(join(lab.dir, 'imgstream')), [], 'no snapshot stays mounted');

  // Removing the image lets containerd's garbage collector Remove and Cleanup our snapshots.
  await ctd.ctr(['images', 'rm', '--sync', image.ref]);
  const deadline = Date.now() + 20_000;
  while ((await server.snapshotter.list()).length > 0 && Date.now() < deadline) await sleep(100);
  assert.deepEqual(await server.snapshotter.list(), [], ctd.log());
  for (const m of ['Prepare', 'Mounts', 'Commit', 'Remove', 'Stat', 'List', 'Usage']) {
    assert.ok(
      requests.some((r) => r.method === m && r.error === undefined),
      `containerd called ${m} (saw ${[...new Set(requests.map((r) => r.method))].join(',')})`,
    );
  }
  assert.ok(requests.some((r) => r.method === 'Cleanup'), 'containerd ran Cleanup after garbage collection');
});

test('the remote snapshot hook with a real containerd: a layer answered by the decider is not unpacked, and containers still see it', { timeout: 150_000 }, async (t) => {
  const registry = await startRegistry(t);
  const image = await pushTreeImage(registry.url, 'hooked:1', [
    { 'bin/busybox': { copyFrom: '/usr/bin/busybox' }, 'etc/base.txt': 'base layer\n' },
    { 'etc/top.txt': 'top layer\n' },
  ]);
  const chains = chainId(image.diffIds);
  const lab = await makeLab(t, 'imgstream-ctd-');

  // Stand-in for a finished local layer cache: the bottom layer, extracted once, outside containerd.
  const cacheDir = join(lab.dir, 'layer-cache', image.layerDigests[0]!.replace(':', '-'));
  await mkdir(cacheDir, { recursive: true });
  const blob = Buffer.from(await (await fetch(`${registry.url}/v2/hooked/blobs/${image.layerDigests[0]}`)).arrayBuffer());
  await writeFile(`${cacheDir}.tar.gz`, blob);
  await promisify(execFile)('tar', ['-xzf', `${cacheDir}.tar.gz`, '-C', cacheDir]);

  const asked: Array<{ targetRef: string; source: string }> = [];
  const decider: RemoteSnapshotDecider = {
    async decide(req) {
      asked.push({ targetRef: req.layer.targetRef, source: req.layer.source });
      return req.layer.targetRef === chains[0] ? { remote: true, contentDir: cacheDir } : { remote: false, reason: 'not cached' };
    },
  };
  const socket = join(lab.dir, 'imgstream.sock');
  const server = new SnapshotterServer({ rootDir: join(lab.dir, 'imgstream'), remoteSnapshotDecider: decider });
  lab.defer(() => server.close());
  const requests: RequestEvent[] = [];
  server.on('request', (e) => requests.push(e));
  await server.listen(socket);
  const ctd = await startContainerd(lab, { proxySnapshotters: { imgstream: socket } });

  // ctr-remote's rpull unpacks through containerd's client unpacker, which labels every Prepare
  // with the chain ID (plain `ctr images pull` in 1.6 does not) and adds the stargz labels.
  await ctd.ctr(['images', 'rpull', '--plain-http', '--snapshotter', 'imgstream', image.ref], { timeoutMs: 60_000, binary: 'ctr-remote' });
  assert.deepEqual(asked, [
    { targetRef: chains[0], source: 'stargz' },
    { targetRef: chains[1], source: 'stargz' },
  ]);
  const bottom = await server.snapshotter.stat(chains[0]!);
  assert.equal(bottom.kind, 'committed');
  assert.equal(bottom.labels[SnapshotLabel.REMOTE], image.layerDigests[0]);
  assert.equal(bottom.labels[SnapshotLabel.STARGZ_LAYER_DIGEST], image.layerDigests[0]);
  assert.equal(requests.filter((r) => r.method === 'Commit' && r.error === undefined).length, 1, 'only the top layer was unpacked and committed');
  assert.equal(requests.filter((r) => r.method === 'Prepare' && r.error === 'IMGSTREAM_SNAPSHOT_ALREADY_EXISTS').length, 1);

  const run = await ctd.ctr(['run', '--rm', '--snapshotter', 'imgstream', image.ref, 'hooked-1', '/bin/busybox', 'cat', '/etc/base.txt', '/etc/top.txt'], { timeoutMs: 60_000 });
  assert.equal(run.stdout, 'base layer\ntop layer\n');
});
