import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GarbageCollector, ImagesInUseStore, LayerCache, sha256Digest, type Digest, type GcClock } from '@imgstream/core';
import { tempDir } from '../../../test/helpers/tmp.ts';

async function addLayer(cache: LayerCache, digest: Digest, content = 'x'): Promise<string> {
  const staging = await cache.createStaging(digest);
  await writeFile(join(staging, 'file'), content);
  return cache.commit(staging, { digest, sizeBytes: 1, completedAtMs: 0 });
}

test('at start the layer cache keeps complete layers and removes partial ones, orphan markers and temp files', async (t) => {
  const dir = await tempDir(t);
  const cache = new LayerCache({ layerCacheDir: dir });
  const good = sha256Digest('good');
  await addLayer(cache, good, 'content');
  const hex = (d: Digest) => d.slice(7);
  const partial = sha256Digest('partial');
  await mkdir(join(dir, `sha256=${hex(partial)}`, 'usr'), { recursive: true }); // renamed, crashed before the marker
  const orphan = sha256Digest('orphan');
  await writeFile(join(dir, `sha256=${hex(orphan)}.complete`), JSON.stringify({ digest: orphan })); // marker, no dir
  const bad = sha256Digest('bad');
  await mkdir(join(dir, `sha256=${hex(bad)}`));
  await writeFile(join(dir, `sha256=${hex(bad)}.complete`), '{"digest":'); // torn marker (cannot happen with atomic writes; still refused)
  await mkdir(join(dir, '.staging', 'abc-123', 'root'), { recursive: true });
  await writeFile(join(dir, `.sha256=${hex(good)}.complete.1234.tmp`), 'half');
  await writeFile(join(dir, 'README'), 'not ours');

  const again = new LayerCache({ layerCacheDir: dir });
  const repair = await again.ready();
  assert.deepEqual(repair.complete, [good]);
  assert.ok(again.has(good) && !again.has(partial) && !again.has(orphan) && !again.has(bad));
  assert.equal(await readFile(join(again.dirOf(good), 'file'), 'utf8'), 'content');
  assert.deepEqual((await readdir(dir)).sort(), ['.staging', 'README', `sha256=${hex(good)}`, `sha256=${hex(good)}.complete`].sort());
  assert.deepEqual(await readdir(join(dir, '.staging')), []);
  assert.equal(repair.removed.length, 6);

  // removal: pinned layers stay; marker first, then the directory
  const release = again.pin(good)!;
  assert.equal(await again.remove(good), false);
  release();
  const removed: Digest[] = [];
  again.on('removed', (e) => removed.push(e.digest));
  assert.equal(await again.remove(good), true);
  assert.deepEqual(removed, [good]);
  assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('sha256=')), []);
  assert.equal(again.pin(good), undefined);
});

test('the images-in-use store persists atomically and reloads', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'db', 'images.json');
  const store = new ImagesInUseStore({ path, now: () => 42 });
  const [a, b, c] = ['a', 'b', 'c'].map((s) => sha256Digest(s)) as [Digest, Digest, Digest];
  await Promise.all([store.add('img1', [a, b]), store.add('img2', [b, c])]);
  await store.remove('img1');
  const reloaded = new ImagesInUseStore({ path });
  await reloaded.ready();
  assert.deepEqual(reloaded.images(), [{ key: 'img2', layers: [b, c], sinceMs: 42 }]);
  assert.deepEqual([...reloaded.referencedLayers()].sort(), [b, c].sort());
  assert.deepEqual((await readdir(join(dir, 'db'))), ['images.json'], 'no temp files left');
  await writeFile(path, '{"version":1,"images":[{"key":"x","layers":["nope"]}]}');
  await assert.rejects(new ImagesInUseStore({ path }).ready(), /malformed/);
});

class ManualClock implements GcClock {
  t = 1_000_000;
  timers = new Map<number, { at: number; fn: () => void }>();
  #id = 0;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#id;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** Advances time, firing due timers. */
  advance(ms: number): void {
    this.t += ms;
    for (const [id, timer] of [...this.timers]) {
      if (timer.at <= this.t) {
        this.timers.delete(id);
        timer.fn();
      }
    }
  }
}

test('GC property: with an injected clock, random histories never remove an in-use or pinned layer, and do remove stale ones', async (t) => {
  const root = await tempDir(t);
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let run = 0; run < 12; run++) {
    const cache = new LayerCache({ layerCacheDir: join(root, `c${run}`) });
    const store = new ImagesInUseStore({ path: join(root, `c${run}.json`) });
    const clock = new ManualClock();
    const grace = 1000 * (1 + rand(5));
    const gc = new GarbageCollector({ layerCache: cache, imagesInUse: store, gcPeriodMs: 500, gcGracePeriodMs: grace, clock });
    const layers = Array.from({ length: 8 }, (_, i) => sha256Digest(`run${run}-layer${i}`));
    const pins = new Map<Digest, () => void>();
    const lastReferencedAt = new Map<Digest, number>();
    const removedNow: Digest[] = [];
    gc.on('run', (r) => removedNow.push(...r.removed));
    const noteRefs = () => {
      for (const l of store.referencedLayers()) lastReferencedAt.set(l, clock.now());
      for (const l of pins.keys()) lastReferencedAt.set(l, clock.now());
    };
    gc.start();
    for (let step = 0; step < 60; step++) {
      const op = rand(6);
      const layer = layers[rand(layers.length)]!;
      if (op === 0 && !cache.has(layer)) await addLayer(cache, layer);
      else if (op === 1) await store.add(`img${rand(4)}`, layers.filter(() => rand(3) === 0));
      else if (op === 2) await store.remove(`img${rand(4)}`);
      else if (op === 3 && !pins.has(layer)) {
        const release = cache.pin(layer);
        if (release) pins.set(layer, release);
      } else if (op === 4 && pins.has(layer)) {
        pins.get(layer)!();
        pins.delete(layer);
      }
      noteRefs();
      const inUse = new Set([...store.referencedLayers(), ...pins.keys()]);
      const before = new Set(cache.list());
      removedNow.length = 0;
      clock.advance(rand(800));
      await gc.runOnce(); // the timer may have started one: wait for it (runs never overlap)
      await gc.runOnce();
      for (const l of removedNow) {
        assert.ok(!inUse.has(l), `run ${run} step ${step}: removed in-use layer ${l}`);
        assert.ok(before.has(l));
        assert.ok(clock.now() - (lastReferencedAt.get(l) ?? -Infinity) >= grace || !lastReferencedAt.has(l), 'removed before its grace period ended');
      }
      for (const l of inUse) if (before.has(l)) assert.ok(cache.has(l), `in-use layer ${l} is still cached`);
    }
    // liveness: release everything, drop all images, wait out the grace period
    for (const r of pins.values()) r();
    for (const img of store.images()) await store.remove(img.key);
    await gc.runOnce();
    clock.advance(grace);
    await gc.runOnce();
    assert.deepEqual(cache.list(), [], 'stale layers are collected');
    await gc.close();
    assert.equal(clock.timers.size, 0, 'close stops the loop');
  }
});
