import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { BufferRangeReader, LayerCache, LayerDownloader, sha256Digest, unpackLayer } from '@imgstream/core';
import { coreTarExtractor } from '../../packages/core/src/download/core-tar-entries.ts';
import { allTypesEntries } from '../helpers/fixtures.ts';
import { extractTruth } from '../helpers/layer-truth.ts';
import { buildTar, gzip } from '../helpers/tar-builder.ts';
import { tempDir } from '../helpers/tmp.ts';

const run = promisify(execFile);

test('the layer unpacker fed by core readTar: sparse files expanded, binary xattrs exact, equal to GNU tar', async (t) => {
  const tar = buildTar(allTypesEntries());
  const truth = await extractTruth(t, tar);
  const dir = await tempDir(t, 'imgstream-unpack-');
  const root = join(dir, 'root');
  await mkdir(root);
  await mkdir(join(dir, 'scratch'));
  const { writable, entries } = coreTarExtractor();
  const [, result] = await Promise.all([pipeline(Readable.from([Buffer.from(tar)]), writable), unpackLayer(entries, root, { scratchDir: join(dir, 'scratch') })]);
  assert.ok(result.entries > 25);
  for (const p of ['sparse/gnu', 'sparse/pax1', 'sparse/pax01', 'usr/bin/tool', 'etc/hosts', 'dup', `gnu/${'z'.repeat(150)}`]) {
    const want = await readFile(truth.get(p)?.abs ?? '');
    assert.ok((await readFile(join(root, p))).equals(want), p);
  }
  const { stdout } = await run('getfattr', ['-d', '-m', '-', '-e', 'hex', '--absolute-names', join(root, 'etc/hosts')]);
  assert.match(stdout, new RegExp(`security.capability=0x${truth.get('etc/hosts')?.xattrs.get('security.capability')}`));
  assert.match(stdout, /user.comment=0x6869/);
});

/**
 * Everything overlayfs and a container see of a tree: type, mode, owner, mtime, size, device, link
 * count, target, content, xattrs. mtimes after `sinceMs` (directories without a tar entry, whiteouts)
 * are the unpack's clock, so they only count as 'during the unpack'.
 */
async function describeTree(root: string, sinceMs: number): Promise<Map<string, unknown>> {
  const { stdout } = await run('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: root, maxBuffer: 64 << 20 }).catch((err: { stdout?: string }) => {
    if (typeof err.stdout !== 'string') throw err;
    return { stdout: err.stdout };
  });
  const out = new Map<string, unknown>([['xattrs', stdout.split('\n').filter((l) => l !== '').sort()]]);
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const p = rel === '' ? name : `${rel}/${name}`;
      const abs = join(root, p);
      const st = await lstat(abs);
      out.set(p, {
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        mtimeMs: st.mtimeMs >= sinceMs ? 'during the unpack' : st.mtimeMs,
        size: st.size,
        rdev: st.rdev,
        nlink: st.nlink,
        ...(st.isSymbolicLink() ? { target: await readlink(abs) } : {}),
        ...(st.isFile() ? { sha256: createHash('sha256').update(await readFile(abs)).digest('hex') } : {}),
      });
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk('');
  return out;
}

test('LayerDownloader unpacks the same layer identically in its unpack worker and on the calling thread, equal to GNU tar', async (t) => {
  const tar = buildTar(allTypesEntries());
  const blob = gzip(tar);
  const truth = await extractTruth(t, tar);
  const trees: Array<Map<string, unknown>> = [];
  const sinceMs = Date.now() - 1_000;
  for (const unpackInWorker of [true, false]) {
    const downloader = new LayerDownloader({ layerCache: new LayerCache({ layerCacheDir: await tempDir(t, 'imgstream-unpack-') }), unpackInWorker, downloadChunkBytes: 64 * 1024 });
    t.after(() => downloader.close());
    const dir = await downloader.download({ digest: sha256Digest(blob), diffId: sha256Digest(tar), source: new BufferRangeReader(blob) });
    for (const p of ['sparse/gnu', 'sparse/pax1', 'sparse/pax01', 'usr/bin/tool', 'etc/hosts', 'dup', `gnu/${'z'.repeat(150)}`]) {
      const want = await readFile(truth.get(p)?.abs ?? '');
      assert.ok((await readFile(join(dir, p))).equals(want), `${p} (unpackInWorker: ${unpackInWorker})`);
    }
    trees.push(await describeTree(dir, sinceMs));
  }
  assert.ok(trees[0]!.size > 25);
  assert.deepEqual(trees[0], trees[1]);
});
