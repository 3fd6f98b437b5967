import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { indexImage, parseReference, RegistryClient } from '@imgstream/core';
import { SnapshotLabel } from '@imgstream/snapshotter';
import { startRegistry } from '../helpers/registry.ts';
import { pushTreeImage } from '../helpers/image-builder.ts';
import type { TreeEntry as LayerEntry } from '../helpers/tar-builder.ts';
import { makeLab, startContainerd } from '../helpers/containerd.ts';
import { startImgstreamd } from '../helpers/imgstreamd.ts';
import { criPullImage } from '../helpers/cri-client.ts';
import { startKubeApiServer } from '../helpers/kube-api-server.ts';

const chainIds = (diffIds: readonly string[]): string[] => {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out.at(-1);
    out.push(prev === undefined ? d : `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}`);
  }
  return out;
};

test("containerd's CRI PullImage (as the kubelet calls it) streams indexed layers through imgstreamd; unindexed layers fall back; Kubernetes events say so", { timeout: 200_000 }, async (t) => {
  const registry = await startRegistry(t);
  const layers = (tag: string): Array<Record<string, LayerEntry>> => [
    { 'bin/busybox': { copyFrom: '/usr/bin/busybox' }, 'etc/base.txt': `base of ${tag}\n` },
    { 'etc/top.txt': `top of ${tag}\n` },
  ];
  const indexed = await pushTreeImage(registry.url, 'cri-indexed:1', layers('indexed'));
  const plain = await pushTreeImage(registry.url, 'cri-plain:1', layers('plain'));
  // the same layer twice and an empty layer: distinct chain IDs over one FUSE layer view
  const dup = await pushTreeImage(registry.url, 'cri-dup:1', [...layers('dup'), {}, layers('dup')[1]!]);
  assert.equal(dup.layerDigests[1], dup.layerDigests[3]);
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  await indexImage(client, parseReference(indexed.ref));
  await indexImage(client, parseReference(dup.ref));

  const lab = await makeLab(t, 'imgstreamd-cri-');
  // --event_reporter_type k8s: events land on a local Kubernetes API server
  const kube = await startKubeApiServer(t);
  const daemon = await startImgstreamd(lab, ['--event_reporter_type=k8s', `--k8s_kubeconfig=${kube.kubeconfigPath}`, '--k8s_node_name=node-a']);
  const cri = `
[plugins."io.containerd.grpc.v1.cri"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "imgstream"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${JSON.stringify(join(lab.dir, 'cni', 'bin'))}
    conf_dir = ${JSON.stringify(join(lab.dir, 'cni', 'conf'))}
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors.${JSON.stringify(registry.host)}]
    endpoint = [${JSON.stringify(registry.url)}]
`;
  const ctd = await startContainerd(lab, { proxySnapshotters: { imgstream: daemon.socket }, namespace: 'k8s.io', criConfig: cri });

  for (const [img, remote, tag] of [
    [indexed, true, 'indexed'],
    [plain, false, 'plain'],
    [dup, true, 'dup'],
  ] as const) {
    const imageRef = await criPullImage(ctd.address, img.ref);
    assert.match(imageRef, /^sha256:[0-9a-f]{64}$/);
    for (const [i, chain] of chainIds(img.diffIds).entries()) {
      const s = JSON.parse((await ctd.ctr(['snapshots', '--snapshotter', 'imgstream', 'info', chain])).stdout) as { Kind: string; Labels?: Record<string, string> };
      assert.equal(s.Kind, 'Committed');
      assert.equal(s.Labels?.[SnapshotLabel.REMOTE], remote ? img.layerDigests[i] : undefined, `${img.ref} layer ${i}: ${JSON.stringify(s.Labels)}\n${daemon.log().slice(-6000)}`);
      if (remote) assert.equal(s.Labels?.[SnapshotLabel.CRI_LAYER_DIGEST], img.layerDigests[i], 'CRI annotations reached the snapshotter');
    }
    const run = await ctd.ctr(['run', '--rm', '--snapshotter', 'imgstream', img.ref, `cri-${tag}`, '/bin/busybox', 'cat', '/etc/base.txt', '/etc/top.txt'], { timeoutMs: 120_000 });
    assert.equal(run.stdout, `base of ${tag}\ntop of ${tag}\n`);
  }
  await kube.waitFor(() => kube.events().length >= 2, 'an ImageStreaming and a fallback event', 20_000);
  const events = kube.events().map((e) => `${e.type} ${e.reason} ${e.message}`);
  assert.ok(events.some((e) => e.startsWith('Normal ImageStreaming') && e.includes(indexed.ref)), JSON.stringify(events));
  assert.ok(events.some((e) => e.startsWith('Warning StreamingFallbackNoIndex') && e.includes(plain.ref) && e.includes(plain.layerDigests[0]!)), JSON.stringify(events));
  assert.deepEqual(kube.violations, []);
  await kube.waitFor(() => kube.node('node-a')?.metadata?.labels?.['imgstream.dev/image-streaming'] === 'true', 'node label', 20_000);
  const fallbacks = daemon.records().filter((r) => r.msg === 'layer is not streamed: containerd pulls it in full');
  assert.deepEqual(
    fallbacks.map((r) => `${String(r.image).split('/')[1]} ${String(r.code)}`),
    ['cri-plain:1 IMGSTREAM_NOT_STREAMABLE', 'cri-plain:1 IMGSTREAM_NOT_STREAMABLE'],
  );
});
