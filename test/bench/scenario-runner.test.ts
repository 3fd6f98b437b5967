import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SnapshotterServer, type RequestEvent } from '@imgstream/snapshotter';
import { buildImage } from '../../bench/src/images/build-image.ts';
import type { ImageRecipe } from '../../bench/src/images/recipes.ts';
import { EmulatedNetwork } from '../../bench/src/net/emulated-network.ts';
import { PROFILES } from '../../bench/src/net/profiles.ts';
import { pushImage, REGISTRY_PORT, startBenchRegistry, STORAGE_PORT } from '../../bench/src/registry/bench-registry.ts';
import { runScenario } from '../../bench/src/scenarios/run-scenario.ts';
import type { StartImgstreamDaemon } from '../../bench/src/scenarios/types.ts';
import { Cleanup } from '../../bench/src/util/cleanup.ts';
import { inNetns, run } from '../../bench/src/util/proc.ts';

const TINY: ImageRecipe = {
  name: 'bench-runner-tiny',
  tag: '1',
  description: 'busybox and two data files',
  layers: [
    { name: 'busybox', files: { 'bin/busybox': { copyFrom: '/usr/bin/busybox' }, 'data/a.txt': 'a\n' } },
    { name: 'more', files: { 'data/b.txt': 'b'.repeat(100_000) } },
  ],
  cmd: ['/bin/busybox', 'echo', 'READY'],
  env: ['PATH=/bin'],
  compilePython: false,
};

test('the scenario runner: full pull and read-all through the emulated network, and the imgstream plug-in point with a real proxy snapshotter', { timeout: 240_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const cacheRoot = await mkdtemp(join(tmpdir(), 'imgstream-bench-cache-'));
  cleanup.after(() => rm(cacheRoot, { recursive: true, force: true }));
  const image = await buildImage(TINY, cacheRoot, () => undefined);
  assert.equal(image.layers.length, 2);
  // reproducible: the same recipe gives the same manifest in another cache
  const cacheRoot2 = await mkdtemp(join(tmpdir(), 'imgstream-bench-cache-'));
  cleanup.after(() => rm(cacheRoot2, { recursive: true, force: true }));
  assert.equal((await buildImage(TINY, cacheRoot2, () => undefined)).manifestDigest, image.manifestDigest);

  const net = await EmulatedNetwork.create(cleanup, { ...PROFILES['local']!, rttMs: 10 });
  const stateRoot = await mkdtemp(join(tmpdir(), 'imgstream-bench-state-'));
  cleanup.after(() => rm(stateRoot, { recursive: true, force: true }));
  const [registry, storage] = await net.startProxy([REGISTRY_PORT, STORAGE_PORT]);
  await startBenchRegistry(cleanup, net, join(stateRoot, 'registry'), storage!);
  await pushImage(net, image);
  // blob downloads are sent to the storage beside the registry, through the same link; ranges work there
  const layer = image.layers[1]!;
  const ask = (port: number, path: string, range = '') =>
    run([...inNetns(net.nodeNs), 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port}; printf 'GET ${path} HTTP/1.0\\r\\n${range}\\r\\n' >&3; head -c 600 <&3`]);
  const redirect = (await ask(registry!.port, `/v2/${image.name}/blobs/${layer.digest}`)).stdout;
  const location = /^HTTP\/1\.[01] 307 [^]*?\r\nLocation: http:\/\/([^/\r]+)(\/[^\r]*)\r\n/i.exec(redirect);
  assert.ok(location !== null && location[1] === storage!.hostPort, redirect);
  const ranged = (await ask(storage!.port, location[2]!, 'Range: bytes=10-19\\r\\n')).stdout;
  assert.match(ranged, /^HTTP\/1\.[01] 206 /);
  assert.match(ranged, new RegExp(`Content-Range: bytes 10-19/${layer.compressedBytes}`, 'i'));
  const compressed = image.layers.reduce((s, l) => s + l.compressedBytes, 0);
  const base = { net, registryHost: registry!.hostPort, image, stateRoot, runTimeoutMs: 120_000, cleanup };

  const full = await runScenario(base, 'full-pull', 1);
  assert.equal(full.output, 'READY');
  assert.ok(full.pullMs > 20 && full.readyMs > full.pullMs && full.doneMs >= full.readyMs, JSON.stringify(full));
  assert.ok(full.registryBytes >= compressed && full.registryBytes < compressed + 64 * 1024, `${full.registryBytes} vs ${compressed}`);
  assert.ok(full.lastByteMs !== null && full.lastByteMs <= full.pullMs, JSON.stringify(full));
  assert.ok((full.peakRssBytes['containerd'] ?? 0) > 10e6 && (full.peakRssBytes['ctr pull'] ?? 0) > 5e6, JSON.stringify(full.peakRssBytes));

  const readAll = await runScenario(base, 'full-pull-read-all', 2);
  // busybox, a.txt, b.txt and the base layer's /etc/passwd and /etc/group
  assert.equal(readAll.output, 'READ-ALL-DONE files=5');

  // No imgstream daemon: the imgstream scenarios refuse instead of pretending.
  await assert.rejects(runScenario(base, 'imgstream-cold', 3), /imgstreamd is not available/);

  // The plug-in point, exercised with the real proxy snapshotter (overlay semantics, no streaming):
  // the runner starts it, configures containerd with the name it returns, pulls and runs through it.
  const requests: RequestEvent[] = [];
  let seenCtx: Parameters<StartImgstreamDaemon>[0] | undefined;
  const start: StartImgstreamDaemon = async (ctx) => {
    seenCtx = ctx;
    const server = new SnapshotterServer({ rootDir: join(ctx.stateDir, 'snapshotter') });
    server.on('request', (e) => requests.push(e));
    await server.listen(ctx.socketPath);
    return {
      snapshotter: 'bench-plugin',
      pids: () => [process.pid],
      pullArgs: (ref) => ({ binary: 'ctr', args: ['images', 'pull', '--plain-http', '--snapshotter', 'bench-plugin', ref] }),
      stop: () => server.close(),
    };
  };
  const viaPlugin = await runScenario({ ...base, imgstream: start }, 'imgstream-cold', 4);
  assert.equal(viaPlugin.output, 'READY');
  assert.equal(seenCtx?.netnsPath, `/run/netns/${net.nodeNs}`);
  assert.equal(seenCtx?.registryHost, registry!.hostPort);
  assert.ok(requests.filter((r) => r.method === 'Prepare').length >= 3, requests.map((r) => r.method).join(','));
  assert.ok(viaPlugin.registryBytes >= compressed, `${viaPlugin.registryBytes}`);
  assert.ok((viaPlugin.peakRssBytes[`imgstreamd[${process.pid}]`] ?? 0) > 10e6, JSON.stringify(viaPlugin.peakRssBytes));

  await cleanup.run();
  assert.equal(existsSync(`/run/netns/${net.nodeNs}`), false);
  assert.equal(existsSync(`/run/netns/${net.registryNs}`), false);
});
