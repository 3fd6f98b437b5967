import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { buildEstargz } from '../../../test/helpers/estargz-builder.ts';
import { buildTar, gzip, pseudoRandom, type TarEntrySpec } from '../../../test/helpers/tar-builder.ts';
import { tempDir } from '../../../test/helpers/tmp.ts';

const run = promisify(execFile);
const main = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const cli = (...args: string[]) => run(process.execPath, ['--conditions=imgstream-source', '--import', 'tsx', main, ...args], { maxBuffer: 64 << 20, encoding: 'buffer' });

const big = pseudoRandom(3_000_000, 77, true);
const entries: TarEntrySpec[] = [
  { type: 'dir', name: 'app/', mode: 0o755 },
  { type: 'file', name: 'app/big.txt', content: big, uid: 1000 },
  { type: 'file', name: 'app/small', content: 'hello\n' },
  { type: 'symlink', name: 'app/link', target: 'small' },
  { type: 'file', name: 'app/.wh.old', content: '' },
];

test('imgstream layer index/ls/cat on gzip, uncompressed and eStargz blobs', { timeout: 120_000 }, async (t) => {
  const dir = await tempDir(t);
  const tar = buildTar(entries);
  await writeFile(join(dir, 'layer.tar.gz'), gzip(tar));
  await writeFile(join(dir, 'layer.tar'), tar);
  await writeFile(join(dir, 'layer.esgz'), buildEstargz(entries).blob);

  // plain gzip without an index: a clear message, exit code 1
  const noIndex = await cli('layer', 'ls', join(dir, 'layer.tar.gz')).then(() => undefined, (e: { code: number; stderr: Buffer }) => e);
  assert.equal(noIndex?.code, 1);
  assert.match(noIndex?.stderr.toString() ?? '', /has no seekable index.*imgstream layer index/);

  const idx = await cli('layer', 'index', join(dir, 'layer.tar.gz'), '-o', join(dir, 'gz.idx'), '--span', '262144');
  assert.match(idx.stdout.toString(), /^zran index of sha256:[0-9a-f]{64}: \d+ blocks, 6 entries \(2 files\)/);
  await cli('layer', 'index', join(dir, 'layer.tar'), '-o', join(dir, 'tar.idx'));

  for (const [blob, index] of [['layer.tar.gz', 'gz.idx'], ['layer.tar', 'tar.idx'], ['layer.esgz', undefined]] as const) {
    const extra = index !== undefined ? ['--index', join(dir, index)] : [];
    const ls = (await cli('layer', 'ls', join(dir, blob), '/app', ...extra)).stdout.toString();
    assert.deepEqual(ls.trim().split('\n').map((l) => l.split(/\s+/).slice(4).join(' ')), ['big.txt', 'link -> small', 'old', 'small'], blob);
    assert.match(ls, /^-rw-r--r-- +1000 +0 +3000000 big\.txt$/m);
    assert.match(ls, /^w/m);
    const cat = await cli('layer', 'cat', join(dir, blob), 'app/small', '--stats', ...extra);
    assert.equal(cat.stdout.toString(), 'hello\n');
    assert.match(cat.stderr.toString(), /fetched \d+ bytes for a 6-byte file/);
    const catBig = await cli('layer', 'cat', join(dir, blob), '/app/big.txt', ...extra);
    assert.ok(catBig.stdout.equals(Buffer.from(big)), `${blob} big.txt`);
  }
  // a small file of a gzip layer costs one span, not the layer
  const stats = (await cli('layer', 'cat', join(dir, 'layer.tar.gz'), 'app/small', '--stats', '--index', join(dir, 'gz.idx'))).stderr.toString();
  const fetched = Number(/fetched (\d+)/.exec(stats)?.[1]);
  const layerSize = Number(/layer (\d+) bytes/.exec(stats)?.[1]);
  assert.ok(fetched < layerSize / 2, stats);
});
