import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage } from '../../bench/src/images/build-image.ts';
import type { ImageRecipe } from '../../bench/src/images/recipes.ts';
import { startImgstreamDaemon } from '../../bench/src/imgstreamd-plugin.ts';
import { EmulatedNetwork } from '../../bench/src/net/emulated-network.ts';
import { PROFILES } from '../../bench/src/net/profiles.ts';
import { indexImageForImgstream, pushImage, REGISTRY_PORT, startBenchRegistry, STORAGE_PORT } from '../../bench/src/registry/bench-registry.ts';
import { runScenario } from '../../bench/src/scenarios/run-scenario.ts';
import { Cleanup } from '../../bench/src/util/cleanup.ts';

const IMAGE: ImageRecipe = {
  name: 'bench-imgstreamd-tiny',
  tag: '1',
  description: 'busybox and a data file',
  layers: [
    { name: 'busybox', files: { 'bin/busybox': { copyFrom: '/usr/bin/busybox' }, 'data/a.txt': 'a\n' } },
    { name: 'more', files: { 'data/b.txt': 'b'.repeat(300_000) } },
  ],
  cmd: ['/bin/busybox', 'echo', 'READY'],
  env: ['PATH=/bin'],
  compilePython: false,
};

test('the bench runner streams an indexed image through the imgstreamd plug-in (imgstream-cold, imgstream-cached)', { timeout: 240_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const cacheRoot = await mkdtemp(join(tmpdir(), 'imgstream-bench-cache-'));
  cleanup.after(() => rm(cacheRoot, { recursive: true, force: true }));
  const image = await buildImage(IMAGE, cacheRoot, () => undefined);
  const net = await EmulatedNetwork.create(cleanup, { ...PROFILES['local']!, rttMs: 10 });
  const stateRoot = await mkdtemp(join(tmpdir(), 'imgstream-bench-state-'));
  cleanup.after(() => rm(stateRoot, { recursive: true, force: true }));
  const [registry, storage] = await net.startProxy([REGISTRY_PORT, STORAGE_PORT]);
  await startBenchRegistry(cleanup, net, join(stateRoot, 'registry'), storage!);
  await pushImage(net, image);
  await indexImageForImgstream(net, image);

  const base = { net, registryHost: registry!.hostPort, image, stateRoot, runTimeoutMs: 120_000, cleanup, imgstream: startImgstreamDaemon };
  const cold = await runScenario(base, 'imgstream-cold', 1);
  assert.equal(cold.output, 'READY');
  assert.ok(Object.keys(cold.peakRssBytes).filter((k) => k.startsWith('imgstreamd[')).length >= 3, JSON.stringify(cold.peakRssBytes));
  assert.ok((cold.onDemandBytes ?? 0) + (cold.backgroundBytes ?? 0) > 0, JSON.stringify(cold));
  // imgstream-cached: the warm-up run fills the layer cache (the plug-in's stop waits for the
  // background downloads), so the measured run reads nothing from the registry
  await runScenario(base, 'imgstream-cached', 2);
  const cached = await runScenario(base, 'imgstream-cached', 3);
  assert.equal(cached.output, 'READY');
  assert.equal(cached.onDemandBytes, 0, JSON.stringify(cached));
});
