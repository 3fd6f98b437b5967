import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { INDEX_ARTIFACT_TYPE, MergedTree, RegistryClient, openImageLayers, parseReference, readEntryRange, type LayerIndex, type RangeReader } from '@imgstream/core';
import { allTypesEntries, multiLayerEntries } from '../helpers/fixtures.ts';
import { buildImage, pushOciLayout, writeOciLayout } from '../helpers/image-builder.ts';
import { startRegistry } from '../helpers/registry.ts';
import { tempDir } from '../helpers/tmp.ts';

const run = promisify(execFile);
const cliMain = fileURLToPath(new URL('../../packages/cli/src/main.ts', import.meta.url));
const cli = (...args: string[]) => run(process.execPath, ['--conditions=imgstream-source', '--import', 'tsx', cliMain, ...args], { maxBuffer: 64 << 20, encoding: 'buffer', timeout: 60_000 });

/** Walks the merged tree and umoci's rootfs together and compares every entry and byte. */
async function assertMergedEqualsRootfs(tree: MergedTree, layers: Array<{ index: LayerIndex; reader: RangeReader }>, rootfs: string): Promise<number> {
  let files = 0;
  const walk = async (dir: string): Promise<void> => {
    const onDisk = (await readdir(join(rootfs, dir))).filter((n) => !(dir === '' && n === 'stargz.index.json')).sort();
    assert.deepEqual(tree.children(dir), onDisk, `children of /${dir}`);
    for (const name of onDisk) {
      const p = dir === '' ? name : `${dir}/${name}`;
      const st = await lstat(join(rootfs, p));
      const m = tree.lookup(p);
      assert.ok(m !== undefined, p);
      let e = m.entry;
      if (e.type === 'hardlink') e = layers[m.layer]?.index.entries.get(e.linkTarget ?? '') ?? e;
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : 'fifo';
      assert.equal(e.type, type, `${p} type`);
      if (type !== 'symlink') assert.equal(e.mode.toString(8), (st.mode & 0o7777).toString(8), `${p} mode`);
      assert.equal(e.uid, st.uid, `${p} uid`);
      assert.equal(e.gid, st.gid, `${p} gid`);
      if (type !== 'dir') assert.ok(Math.abs(Math.floor(e.mtimeMs / 1000) - Math.floor(st.mtimeMs / 1000)) <= 1, `${p} mtime ${e.mtimeMs} vs ${st.mtimeMs}`);
      if (type === 'symlink') assert.equal(e.linkTarget, await readlink(join(rootfs, p)), `${p} target`);
      if (type === 'file') {
        const layer = layers[m.layer] as { index: LayerIndex; reader: RangeReader };
        const path = m.entry.type === 'hardlink' ? (m.entry.linkTarget ?? '') : p;
        const got = await readEntryRange(layer.index, layer.reader, path, 0, e.size);
        assert.ok(Buffer.from(got).equals(await readFile(join(rootfs, p))), `${p} content`);
        files++;
      }
      if (type === 'dir') await walk(p);
    }
  };
  await walk('');
  return files;
}

test('imgstream index pushes zran/raw indexes to docker-registry 2.8 (tag-schema fallback); a fresh process reads the merged image like umoci unpack', { timeout: 300_000 }, async (t) => {
  const [m0, m1, m2] = multiLayerEntries();
  const image = buildImage({
    layers: [
      // umoci (Go archive/tar) cannot unpack GNU 'S' sparse entries; PAX sparse is covered
      { entries: allTypesEntries().filter((e) => !(e.type === 'sparse' && e.sparseFormat === 'gnu')) },
      { entries: m0 ?? [] },
      { entries: m1 ?? [], compression: 'none' },
      { entries: m2 ?? [], compression: 'estargz' },
    ],
  });
  const dir = await tempDir(t, 'imgstream-imgidx-');
  const layout = join(dir, 'layout');
  await writeOciLayout(image, layout, 'v1');
  const registry = await startRegistry(t);
  await pushOciLayout(layout, 'v1', registry.host, 'apps/demo');
  const refText = `${registry.host}/apps/demo:v1`;

  // before indexing: a clear refusal
  const before = await cli('ls', '--plain-http', refText, '/').then(() => undefined, (e: { code: number; stderr: Buffer }) => e);
  assert.equal(before?.code, 1);
  assert.match(before?.stderr.toString() ?? '', /^imgstream: [^\n]*: 3 of 4 layers have no seekable index .*run `imgstream index [^`]+` first\n$/);

  const first = await cli('index', '--plain-http', refText);
  assert.match(first.stdout.toString(), /index artifact sha256:[0-9a-f]{64} pushed/);
  assert.match(first.stderr.toString(), /layer 3 .*eStargz, carries its own index/);
  const second = await cli('index', '--plain-http', refText);
  assert.match(second.stdout.toString(), /\(already there\)/);
  assert.equal(/index artifact (sha256:[0-9a-f]{64})/.exec(first.stdout.toString())?.[1], /index artifact (sha256:[0-9a-f]{64})/.exec(second.stdout.toString())?.[1]);

  // found again (fresh client): through the fallback tag, one artifact
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  const ref = parseReference(refText);
  const img = await client.resolveImage(ref, { platform: { os: 'linux', architecture: 'amd64' } });
  assert.equal((await client.referrers(ref, img.digest, { artifactType: INDEX_ARTIFACT_TYPE })).length, 1);
  const opened = await openImageLayers(client, ref, img);
  assert.deepEqual(opened.map((l) => l.index?.format), ['zran', 'zran', 'raw', 'estargz']);

  // ground truth: umoci's merged rootfs
  await run('umoci', ['unpack', '--image', `${layout}:v1`, join(dir, 'bundle')], { timeout: 120_000 });
  const layers = opened.map((l) => ({ index: l.index as LayerIndex, reader: l.reader }));
  const files = await assertMergedEqualsRootfs(new MergedTree(layers.map((l) => l.index)), layers, join(dir, 'bundle', 'rootfs'));
  assert.ok(files > 15, `${files} files compared`);

  // fresh processes: ls and cat with --stats
  const ls = (await cli('ls', '--plain-http', refText, '/app')).stdout.toString();
  assert.deepEqual(ls.trim().split('\n').map((l) => l.split(/\s+/).slice(4).join(' ')), ['data', 'link -> data/y']);
  const cat = await cli('cat', '--plain-http', '--stats', refText, '/usr/share/doc.txt');
  assert.ok(cat.stdout.equals(await readFile(join(dir, 'bundle', 'rootfs', 'usr/share/doc.txt'))));
  const stats = /fetched (\d+) bytes for a (\d+)-byte file \(layer 0, zran, (\d+) bytes\)/.exec(cat.stderr.toString());
  assert.ok(stats !== null, cat.stderr.toString());
  assert.ok(Number(stats[1]) < Number(stats[3]), 'fetched less than the layer');
});
