import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { indexImage, parseReference, RegistryClient } from '@imgstream/core';
import type { TreeEntry as LayerEntry } from '../helpers/tar-builder.ts';
import { SnapshotLabel } from '@imgstream/snapshotter';
import { startRegistry } from '../helpers/registry.ts';
import { pushTreeImage } from '../helpers/image-builder.ts';
import { makeLab, startContainerd } from '../helpers/containerd.ts';
import { startImgstreamd } from '../helpers/imgstreamd.ts';

const chainIds = (diffIds: readonly string[]): string[] => {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out.at(-1);
    out.push(prev === undefined ? d : `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}`);
  }
  return out;
};

const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

test('imgstreamd with a real containerd: indexed gzip, eStargz and unindexed images run; only indexed layers are remote; a snapshotter restart keeps containers working', { timeout: 280_000 }, async (t) => {
  const registry = await startRegistry(t);
  // 3 MiB of incompressible data in the top layer, so reads cross several zran spans
  const big = randomBytes(3 * 1024 * 1024).toString('base64');
  const layers = (tag: string): Array<Record<string, LayerEntry>> => [
    { 'bin/busybox': { copyFrom: '/usr/bin/busybox' }, 'etc/base.txt': `base of ${tag}\n`, tmp: { dir: true } },
    { 'etc/top.txt': `top of ${tag}\n`, 'data/big.txt': big },
  ];
  const indexed = await pushTreeImage(registry.url, 'indexed:1', layers('indexed'));
  const plain = await pushTreeImage(registry.url, 'plain:1', layers('plain'));
  const esgzSrc = await pushTreeImage(registry.url, 'esgz-src:1', layers('esgz'));
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  const indexResult = await indexImage(client, parseReference(indexed.ref));
  assert.deepEqual(
    indexResult.layers.map((l) => l.kind),
    ['zran', 'zran'],
  );

  const lab = await makeLab(t, 'imgstreamd-e2e-');
  const daemon = await startImgstreamd(lab);
  const ctd = await startContainerd(lab, { proxySnapshotters: { imgstream: daemon.socket } });
  const remoteCtr = (args: string[]) => ctd.ctr(args, { binary: 'ctr-remote', timeoutMs: 120_000 });

  // eStargz: converted by ctr-remote (containerd's content store), pushed back to the registry
  const esgzRef = `${registry.host}/esgz:1`;
  await remoteCtr(['images', 'pull', '--plain-http', esgzSrc.ref]);
  await remoteCtr(['images', 'convert', '--estargz', '--oci', esgzSrc.ref, esgzRef]);
  await remoteCtr(['images', 'push', '--plain-http', esgzRef]);
  await ctd.ctr(['images', 'rm', '--sync', esgzSrc.ref, esgzRef]);

  const expectOut = (tag: string) => `base of ${tag}\ntop of ${tag}\n${sha(big)}\n`;
  const script = 'cat /etc/base.txt /etc/top.txt; sha256sum /data/big.txt | cut -d" " -f1';
  const cases = [
    { name: 'indexed', ref: indexed.ref, remote: true },
    { name: 'esgz', ref: esgzRef, remote: true },
    { name: 'plain', ref: plain.ref, remote: false },
  ];
  for (const c of cases) {
    await remoteCtr(['images', 'rpull', '--plain-http', '--snapshotter', 'imgstream', c.ref]);
    const run = await ctd.ctr(['run', '--rm', '--snapshotter', 'imgstream', c.ref, `run-${c.name}`, '/bin/busybox', 'sh', '-c', script], { timeoutMs: 120_000 });
    assert.equal(run.stdout, expectOut(c.name), `${c.name}: ${run.stderr}\n${daemon.log().slice(-4000)}`);
  }

  // The streamed layers (none has xattrs) are also under the mount without xattrs, where containers read them
  const plainLayers = await readdir(join(`${daemon.mountPoint}-noxattr`, 'layers'));
  for (const d of indexed.layerDigests) assert.ok(plainLayers.includes(d.replace(':', '=')), `${d} in ${JSON.stringify(plainLayers)}`);

  // Only the indexed images' layers are remote snapshots.
  const info = async (name: string) =>
    JSON.parse((await ctd.ctr(['snapshots', '--snapshotter', 'imgstream', 'info', name])).stdout) as { Kind: string; Labels?: Record<string, string> };
  for (const [img, remote] of [
    [indexed, true],
    [plain, false],
  ] as const) {
    for (const [i, chain] of chainIds(img.diffIds).entries()) {
      const s = await info(chain);
      assert.equal(s.Kind, 'Committed');
      assert.equal(s.Labels?.[SnapshotLabel.REMOTE], remote ? img.layerDigests[i] : undefined, `${img.ref} layer ${i}`);
    }
  }
  // containerd prepares an image's layers one after another: the first Prepare asks the FUSE
  // server, whose answer names the image's other open layers; their Prepares are decided from it
  const decided = daemon.records().filter((r) => r.msg === 'remote snapshot: layer is streamed, containerd skips it');
  for (const img of [indexed]) {
    const first = img.layerDigests.map((d) => decided.find((r) => r.layer === d));
    assert.deepEqual(
      first.map((r) => r?.fromImage ?? false),
      [false, true],
      `first decisions of ${img.ref}: ${JSON.stringify(first)}`,
    );
  }
  const streamed = daemon.records().filter((r) => r.msg === 'layer is streamed');
  const fallbacks = daemon.records().filter((r) => r.msg === 'layer is not streamed: containerd pulls it in full');
  assert.deepEqual(
    streamed.map((r) => `${String(r.image).split('/')[1]} ${String(r.format)}`).sort(),
    ['esgz:1 estargz', 'esgz:1 estargz', 'indexed:1 zran', 'indexed:1 zran'],
  );
  assert.deepEqual(
    fallbacks.map((r) => `${String(r.image).split('/')[1]} ${String(r.code)}`),
    ['plain:1 IMGSTREAM_NOT_STREAMABLE', 'plain:1 IMGSTREAM_NOT_STREAMABLE'],
  );
  const metrics = await daemon.metrics();
  assert.match(metrics, /imgstream_layers_total\{decision="remote",reason=""\} 4/);
  assert.match(metrics, /imgstream_layers_total\{decision="fallback",reason="IMGSTREAM_NOT_STREAMABLE"\} 2/);
  const onDemand = Number(/imgstream_fetched_bytes_total\{kind="on_demand"\} (\d+)/.exec(metrics)?.[1] ?? 0);
  const background = Number(/imgstream_fetched_bytes_total\{kind="background"\} (\d+)/.exec(metrics)?.[1] ?? 0);
  assert.ok(onDemand + background > 3_000_000, `fetched ${onDemand} on demand + ${background} in background`);

  // Once layers are downloaded, new containers get the local cache dirs as lower dirs (decided
  // at Mounts time), not the FUSE views.
  for (const layer of indexed.layerDigests) await daemon.waitFor((r) => r.msg === 'layer downloaded: new containers use the local copy' && r.layer === layer);
  // A long-running container on the indexed image; kill -9 the snapshotter under it.
  await ctd.ctr(['run', '-d', '--snapshotter', 'imgstream', indexed.ref, 'long', '/bin/busybox', 'sleep', '600']);
  const read = async (id: string) =>
    (await ctd.ctr(['tasks', 'exec', '--exec-id', id, 'long', '/bin/busybox', 'sh', '-c', script], { timeoutMs: 60_000 })).stdout;
  assert.equal(await read('e1'), expectOut('indexed'));
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const lowers = [...mountinfo.matchAll(/lowerdir=([^,\s]+)/g)].map((m) => m[1]!).filter((l) => l.includes(daemon.layerCacheDir) || l.includes(daemon.mountPoint));
  const expectLower = [...indexed.layerDigests].reverse().map((d) => join(daemon.layerCacheDir, d.replace(':', '='))).join(':');
  assert.ok(lowers.includes(expectLower), `overlay of the long container uses the local layer dirs: ${JSON.stringify(lowers)}`);
  const oldPid = daemon.childPid('snapshotter');
  const mark = daemon.records().length;
  process.kill(oldPid, 'SIGKILL');
  // while it is down, and after it is back, the container reads its files
  assert.equal(await read('e2'), expectOut('indexed'));
  await daemon.waitFor((r) => r.msg === 'snapshotter listening', { from: mark, timeoutMs: 30_000 });
  assert.notEqual(daemon.childPid('snapshotter'), oldPid);
  const reattached = await daemon.waitFor((r) => r.msg === 're-attached remote snapshot', { from: mark });
  assert.ok(String(reattached.layer).startsWith('sha256:'));
  assert.equal(await read('e3'), expectOut('indexed'));
  // and the restarted snapshotter serves new containers on the same remote snapshots
  // (containerd's gRPC client reconnects to the new socket with its own backoff: retry meanwhile)
  let again: { stdout: string } | undefined;
  for (let attempt = 0; again === undefined; attempt++) {
    try {
      again = await ctd.ctr(['run', '--rm', '--snapshotter', 'imgstream', indexed.ref, `after-restart-${attempt}`, '/bin/busybox', 'sh', '-c', script], { timeoutMs: 120_000 });
    } catch (err) {
      if (attempt >= 60 || !/connection refused|Unavailable|unavailable/.test(String(err))) throw err;
      await sleep(1000);
    }
  }
  assert.equal(again.stdout, expectOut('indexed'));
  await ctd.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'long']);
  for (let i = 0; i < 50; i++) {
    const ls = await ctd.ctr(['tasks', 'ls']);
    if (!/long\s+\d+\s+RUNNING/.test(ls.stdout)) break;
    await sleep(100);
  }
  await ctd.ctr(['tasks', 'delete', 'long']).catch(() => undefined);
  await ctd.ctr(['containers', 'rm', 'long']);

  // The FUSE server crashes: the supervisor restarts it (the stale mount is replaced), the
  // snapshotter re-opens layers through it on the next Mounts, new containers start.
  const fuseMark = daemon.records().length;
  const oldFusePid = daemon.childPid('fuse-server');
  process.kill(oldFusePid, 'SIGKILL');
  await daemon.waitFor((r) => r.msg === 'control socket listening', { from: fuseMark, timeoutMs: 30_000 });
  assert.notEqual(daemon.childPid('fuse-server'), oldFusePid);
  const afterFuse = await ctd.ctr(['run', '--rm', '--snapshotter', 'imgstream', esgzRef, 'after-fuse-restart', '/bin/busybox', 'sh', '-c', script], { timeoutMs: 120_000 });
  assert.equal(afterFuse.stdout, expectOut('esgz'));

  // Removing an image: containerd's GC removes its snapshots; the last remote one releases the
  // image in the images-in-use database (its layers become GC candidates).
  await ctd.ctr(['images', 'rm', '--sync', esgzRef]);
  const released = await daemon.waitFor((r) => r.msg === 'image released' && String(r.image).startsWith(`${esgzRef}@sha256:`), { timeoutMs: 30_000 });
  assert.equal(released.released, true);
  const inUse = JSON.parse(await readFile(join(lab.dir, 'imgstreamd', 'images-in-use.json'), 'utf8')) as { images: Array<{ key: string }> };
  assert.deepEqual(inUse.images.map((i) => i.key.split('@')[0]), [indexed.ref]);

  // Graceful shutdown: SIGTERM stops both children; the FUSE server unmounts.
  // both mounts (every layer; the layers without xattrs) are there while running, and gone after SIGTERM
  const noXattr = `${daemon.mountPoint}-noxattr`;
  const running = await readFile('/proc/self/mountinfo', 'utf8');
  assert.ok(running.includes(` ${daemon.mountPoint} `) && running.includes(` ${noXattr} `), 'FUSE mounted while running');
  assert.equal(await daemon.stop(), 0, daemon.log().slice(-3000));
  const stopped = await readFile('/proc/self/mountinfo', 'utf8');
  assert.ok(!stopped.includes(` ${daemon.mountPoint} `) && !stopped.includes(` ${noXattr} `), 'FUSE unmounted after SIGTERM');
  assert.ok(daemon.records().some((r) => r.msg === 'FUSE server stopped'));
  assert.ok(daemon.records().some((r) => r.msg === 'snapshotter stopped'));
});
