import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MergedTree, buildRawIndex } from '@imgstream/core';
import { buildTar, chunked, type TarEntrySpec } from '../../../test/helpers/tar-builder.ts';

const layer = (entries: TarEntrySpec[]) => buildRawIndex(chunked(buildTar(entries), 4096), { spanBytes: 4096 });

test('MergedTree: whiteouts, opaque dirs, a file over a dir, a dir over a file', async () => {
  const l0 = await layer([
    { type: 'file', name: 'a/1', content: 'x' },
    { type: 'file', name: 'a/2', content: 'x' },
    { type: 'file', name: 'b/1', content: 'x' },
    { type: 'file', name: 'c/deep/1', content: 'x' },
    { type: 'file', name: 'd', content: 'file' },
    { type: 'file', name: 'e/1', content: 'x' },
  ]);
  const l1 = await layer([
    { type: 'file', name: 'a/.wh.1', content: '' },
    { type: 'file', name: 'a/3', content: 'x' },
    { type: 'file', name: 'b/.wh..wh..opq', content: '' },
    { type: 'file', name: 'b/2', content: 'x' },
    { type: 'file', name: 'c', content: 'now a file' },
    { type: 'file', name: 'd/1', content: 'd is a dir now' },
    { type: 'file', name: '.wh.e', content: '' },
  ]);
  const l2 = await layer([{ type: 'file', name: 'a/1', content: 'back' }]);
  const tree = new MergedTree([l0, l1, l2]);
  assert.deepEqual(tree.children(''), ['a', 'b', 'c', 'd']);
  assert.deepEqual(tree.children('a'), ['1', '2', '3']);
  assert.equal(tree.lookup('a/1')?.layer, 2);
  assert.deepEqual(tree.children('b'), ['2']);
  assert.equal(tree.lookup('b/1'), undefined);
  assert.equal(tree.lookup('c')?.entry.type, 'file');
  assert.equal(tree.lookup('c/deep/1'), undefined);
  assert.equal(tree.children('c'), undefined);
  assert.deepEqual(tree.children('d'), ['1']);
  assert.equal(tree.lookup('e'), undefined);
  assert.equal(tree.lookup('e/1'), undefined);
  assert.equal(new MergedTree([l0, l1]).lookup('a/1'), undefined);
  assert.deepEqual(new MergedTree([l0]).children('a'), ['1', '2']);
});
