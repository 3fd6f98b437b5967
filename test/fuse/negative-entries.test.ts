// Real FUSE (as root): negative entries (`negativeTimeoutMs`). The kernel must answer a repeated
// lookup of a missing name itself, a layer or image looked up before it was added must be found once
// added, a page-cache warm-up's lookups (of missing and of present paths) must spare the container
// its own, and the mount must unmount cleanly with its pinned directories.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { layerDirName, type ImgstreamFs } from '@imgstream/fuse';
import type { Digest } from '@imgstream/core';
import { memoryLayer } from '../helpers/memory-layer.js';
import type { MemoryLayerContent } from '../helpers/memory-layer.js';
import { mountCount, mountedFs, run, teardownStack } from '../helpers/fuse.js';

const layerOf = (name: string): MemoryLayerContent =>
  memoryLayer([
    { path: 'etc', type: 'dir' },
    { path: 'etc/name', type: 'file', content: `${name}\n` },
    { path: 'lib', type: 'dir' },
    { path: 'lib/node_modules', type: 'dir' },
  ]);

/** Exit code of `stat PATH` in a child process (the kernel's answer, never this process's). */
const statCode = async (path: string): Promise<number | null> => (await run('stat', ['-c', '%n', path])).code;

describe('ImgstreamFs negative entries (negativeTimeoutMs)', () => {
  const td = teardownStack(after);
  const absent: Array<[Digest, string]> = [];
  const plainAbsent: Array<[Digest, string]> = [];
  const found: Array<[Digest, string]> = [];
  let fs: ImgstreamFs;
  let plain: ImgstreamFs;
  let a: MemoryLayerContent;

  before(async () => {
    a = layerOf('a');
    // two mounts in one process: each finds its own connection
    plain = await mountedFs(td, { onAbsent: (l, p) => plainAbsent.push([l, p]) });
    fs = await mountedFs(td, { negativeTimeoutMs: 60_000, onAbsent: (l, p) => absent.push([l, p]), onLookup: (l, p) => found.push([l, p]) });
    for (const m of [fs, plain]) m.addLayer(a.index.layerDigest, a);
  });

  it('answers a repeated lookup of a missing name in the kernel', async () => {
    const name = `${fs.layerPath(a.index.layerDigest)}/lib/node_modules/nope/package.json`;
    const plainName = `${plain.layerPath(a.index.layerDigest)}/lib/node_modules/nope/package.json`;
    for (let i = 0; i < 3; i++) {
      assert.notEqual(await statCode(name), 0);
      assert.notEqual(await statCode(plainName), 0);
    }
    // `nope` is missing: its child is never asked for
    assert.deepEqual(absent, [[a.index.layerDigest, 'lib/node_modules/nope']]);
    assert.equal(plainAbsent.length, 3, 'without negative entries the kernel asks every time');
  });

  it('finds a layer that was looked up before it was added', async () => {
    const b = layerOf('b');
    const dir = fs.layerPath(b.index.layerDigest);
    assert.notEqual(await statCode(`${dir}/etc/name`), 0);
    assert.notEqual(await statCode(dir), 0);
    fs.addLayer(b.index.layerDigest, b);
    await fs.visible();
    assert.equal((await run('cat', [`${dir}/etc/name`])).stdout, 'b\n');
    // removed and added again: still found
    fs.removeLayer(b.index.layerDigest);
    fs.addLayer(b.index.layerDigest, b);
    await fs.visible();
    assert.equal(await statCode(`${dir}/etc/name`), 0);
  });

  it('finds an image that was looked up before it was added', async () => {
    const c = layerOf('c');
    const manifest = `sha256:${'c'.repeat(64)}` as Digest;
    const imageDir = fs.imagePath('example.com/neg:1', manifest);
    assert.notEqual(await statCode(imageDir), 0);
    // the image's link dangles (its layer is not added yet): following it caches a miss in layers/
    fs.addImage('example.com/neg:1', manifest, [c.index.layerDigest]);
    await fs.visible();
    assert.equal((await run('readlink', [`${imageDir}/0`])).stdout.trim(), `../../layers/${layerDirName(c.index.layerDigest)}`);
    assert.notEqual(await statCode(`${imageDir}/0/etc/name`), 0);
    fs.addLayer(c.index.layerDigest, c);
    await fs.visible();
    assert.equal((await run('cat', [`${imageDir}/0/etc/name`])).stdout, 'c\n');
  });

  it('past 4 096 names looked up in vain in layers/, every add still drops its cached miss', async () => {
    const d = layerOf('d');
    // 4 100 lookups of other layer names that are not there, then d's
    const script = `const fs = require('node:fs'); const c = require('node:crypto');
      for (let i = 0; i < 4100; i++) try { fs.lstatSync(process.argv[1] + '/sha256=' + c.randomBytes(32).toString('hex')); } catch {}`;
    const layersDir = `${fs.mountPoint}/layers`;
    assert.equal((await run(process.execPath, ['-e', script, layersDir], { timeoutMs: 60_000 })).code, 0);
    assert.notEqual(await statCode(fs.layerPath(d.index.layerDigest)), 0);
    fs.addLayer(d.index.layerDigest, d);
    await fs.visible();
    assert.equal((await run('cat', [`${fs.layerPath(d.index.layerDigest)}/etc/name`])).stdout, 'd\n');
  });

  it('a warm-up lookup spares the container its own', async () => {
    const warmer = fs.warmPageCache({ readers: 2 });
    warmer.lookUp(a.index.layerDigest, ['etc/gone', 'lib/node_modules/left-pad', 'lib/node_modules/left-pad']);
    const stats = await warmer.end();
    assert.equal(stats.lookups, 3);
    const before = absent.length;
    assert.deepEqual(absent.slice(-2).map(([, p]) => p).sort(), ['etc/gone', 'lib/node_modules/left-pad']);
    assert.notEqual(await statCode(`${fs.layerPath(a.index.layerDigest)}/etc/gone`), 0);
    assert.notEqual(await statCode(`${fs.layerPath(a.index.layerDigest)}/lib/node_modules/left-pad`), 0);
    assert.equal(absent.length, before, 'the container looked up nothing the warm-up had not');
  });

  it('reports the paths it finds (onLookup), once per kernel lookup; a warm-up lookup of one spares the container its own', async () => {
    const e = layerOf('e');
    fs.addLayer(e.index.layerDigest, e);
    await fs.visible();
    const dir = fs.layerPath(e.index.layerDigest);
    const ofE = () => found.filter(([l]) => l === e.index.layerDigest).map(([, p]) => p);
    for (let i = 0; i < 2; i++) assert.equal(await statCode(`${dir}/etc/name`), 0);
    assert.deepEqual(ofE(), ['etc', 'etc/name'], 'the kernel asked once for each, then kept the entries');
    const warmer = fs.warmPageCache({ readers: 1 });
    warmer.lookUp(e.index.layerDigest, ['lib/node_modules']);
    assert.equal((await warmer.end()).lookups, 1);
    assert.deepEqual(ofE(), ['etc', 'etc/name', 'lib', 'lib/node_modules']);
    assert.equal(await statCode(`${dir}/lib/node_modules`), 0);
    assert.deepEqual(ofE(), ['etc', 'etc/name', 'lib', 'lib/node_modules'], 'the container looked up nothing the warm-up had not');
  });

  it('unmounts cleanly with its pinned directories', async () => {
    const mountPoint = fs.mountPoint;
    await fs.close();
    assert.equal(await mountCount(mountPoint), 0);
  });
});
