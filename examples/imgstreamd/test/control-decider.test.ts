import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseLayerLabels, SnapshotLabel } from '@imgstream/snapshotter';
import { ControlClient, controlDecider, IMAGE_KEY_LABEL, listenControl, type LayerRef, type OpenLayerReply } from 'imgstreamd';

const IMAGE = 'registry.local/app:1';
const MANIFEST = `sha256:${'m'.repeat(64)}`;
const LAYERS = ['a', 'b', 'c'].map((c) => `sha256:${c.repeat(64)}`);
const dirOf = (layer: string) => `/run/imgstream/mnt/layers/${layer.replace(':', '=')}`;

/** A Prepare's request as the snapshotter hands it to the decider. */
function prepare(layerDigest: string, manifestDigest: string | undefined = MANIFEST) {
  const labels: Record<string, string> = {
    [SnapshotLabel.TARGET_REF]: `chain-${layerDigest}`,
    [SnapshotLabel.CRI_IMAGE_REF]: IMAGE,
    [SnapshotLabel.CRI_LAYER_DIGEST]: layerDigest,
    ...(manifestDigest !== undefined ? { [SnapshotLabel.CRI_MANIFEST_DIGEST]: manifestDigest } : {}),
  };
  return { key: `extract-${layerDigest}`, parent: '', labels, layer: parseLayerLabels(labels)! };
}

test('control decider: the first answer names the image\'s other open layers; their Prepares are decided from it, once each, without asking again', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'imgstreamd-control-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  // a real control server on a unix socket; its answers say which layers it was asked for
  const asked: LayerRef[] = [];
  const server = await listenControl(join(dir, 'control.sock'), {
    async openLayer(req): Promise<OpenLayerReply> {
      asked.push(req);
      const siblings = LAYERS.filter((l) => l !== req.layerDigest && l !== LAYERS[2]).map((layerDigest) => ({ layerDigest, dir: dirOf(layerDigest) }));
      return { remote: true, dir: dirOf(req.layerDigest), imageKey: `${IMAGE}@${MANIFEST}`, manifestDigest: MANIFEST, format: 'zran', siblings };
    },
    lowerDir: async () => ({ dir: '/', local: true }),
    releaseImage: async () => ({ released: true }),
  });
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const control = new ControlClient(join(dir, 'control.sock'));
  const known: string[] = [];
  const decider = controlDecider(control, { onKnown: (ref) => known.push(ref.layerDigest) });
  const decide = (layer: string, manifest?: string) => decider.decide(prepare(layer, manifest), {});
  const remote = (layer: string) => ({ remote: true, contentDir: dirOf(layer), labels: { [IMAGE_KEY_LABEL]: `${IMAGE}@${MANIFEST}` } });

  assert.deepEqual(await decide(LAYERS[0]!), remote(LAYERS[0]!));
  assert.deepEqual(asked.map((r) => r.layerDigest), [LAYERS[0]]);
  // b was named in a's answer: decided from it; c was not (not open yet): asked
  assert.deepEqual(await decide(LAYERS[1]!), remote(LAYERS[1]!));
  assert.deepEqual(await decide(LAYERS[2]!), remote(LAYERS[2]!));
  assert.deepEqual(asked.map((r) => r.layerDigest), [LAYERS[0], LAYERS[2]]);
  assert.deepEqual(known, [LAYERS[1]]);
  // c's answer named a and b again; a Prepare of b decides from it once, the next one asks
  await decide(LAYERS[1]!);
  await decide(LAYERS[1]!);
  assert.deepEqual(asked.map((r) => r.layerDigest), [LAYERS[0], LAYERS[2], LAYERS[1]]);
  // a Prepare of another manifest of the same name is not decided from this one's answer
  await decide(LAYERS[0]!, `sha256:${'x'.repeat(64)}`);
  assert.equal(asked.length, 4);
  assert.deepEqual(known, [LAYERS[1], LAYERS[1]]);

  // knownForMs 0: every Prepare asks; a decision known too long ago asks again
  const always = controlDecider(control, { knownForMs: 0 });
  asked.length = 0;
  for (const l of [LAYERS[0]!, LAYERS[1]!]) await always.decide(prepare(l), {});
  assert.equal(asked.length, 2);
  const brief = controlDecider(control, { knownForMs: 30 });
  asked.length = 0;
  await brief.decide(prepare(LAYERS[0]!), {});
  await new Promise((resolve) => setTimeout(resolve, 60));
  await brief.decide(prepare(LAYERS[1]!), {});
  assert.equal(asked.length, 2);
});
