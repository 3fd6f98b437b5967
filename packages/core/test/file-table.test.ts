import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, buildRawIndex, isImgstreamError, normalisePath } from '@imgstream/core';
import { buildTar, chunked, type TarEntrySpec } from '../../../test/helpers/tar-builder.ts';

const index = (entries: TarEntrySpec[]) => buildRawIndex(chunked(buildTar(entries), 4096), { spanBytes: 4096 });

test('file table: implicit parents, last duplicate wins, a later dir entry keeps children and opaque', async () => {
  const idx = await index([
    { type: 'file', name: './a/b/c.txt', content: 'one' },
    { type: 'file', name: 'a/b/.wh..wh..opq', content: '' },
    { type: 'dir', name: 'a/b/', mode: 0o700, uid: 9, mtime: 1_650_000_000 },
    { type: 'file', name: '/a/b/c.txt', content: 'two!', mode: 0o600 },
    { type: 'file', name: 'x', content: 'file first' },
    { type: 'dir', name: 'x/', mode: 0o711 },
    { type: 'file', name: 'x/inside', content: 'y' },
    { type: 'dir', name: 'gone/' },
    { type: 'file', name: 'gone/child', content: 'z' },
    { type: 'symlink', name: 'gone', target: 'elsewhere' },
  ]);
  assert.deepEqual(idx.entries.get('a'), { path: 'a', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeMs: 0, size: 0 });
  const b = idx.entries.get('a/b');
  assert.equal(b?.mode, 0o700);
  assert.equal(b?.uid, 9);
  assert.equal(b?.mtimeMs, 1_650_000_000_000);
  assert.equal(b?.opaque, true);
  assert.deepEqual(idx.children('a/b'), ['c.txt']);
  assert.equal(idx.entries.get('a/b/c.txt')?.size, 4);
  assert.equal(idx.entries.get('a/b/c.txt')?.mode, 0o600);
  assert.equal(idx.entries.get('x')?.type, 'dir');
  assert.deepEqual(idx.children('x'), ['inside']);
  assert.equal(idx.entries.get('gone')?.type, 'symlink');
  assert.equal(idx.entries.has('gone/child'), false);
  assert.deepEqual(idx.children(''), ['a', 'gone', 'x']);
  assert.equal(idx.children('gone'), undefined);
  assert.equal(idx.entries.get('')?.type, 'dir');
});

test('file table: whiteouts, hard links and bad paths', async () => {
  const idx = await index([
    { type: 'file', name: 'd/.wh.old', content: '' },
    { type: 'file', name: '.wh.top', content: '' },
    { type: 'file', name: 'd/.wh..wh.plnk', content: '' },
    { type: 'file', name: 'f', content: 'data' },
    { type: 'hardlink', name: 'h1', target: 'f' },
    { type: 'hardlink', name: 'h2', target: './h1' },
  ]);
  assert.equal(idx.entries.get('d/old')?.type, 'whiteout');
  assert.equal(idx.entries.get('top')?.type, 'whiteout');
  assert.deepEqual(idx.children('d'), ['old']);
  assert.equal(idx.entries.get('h1')?.linkTarget, 'f');
  assert.equal(idx.entries.get('h2')?.linkTarget, 'f');
  const invalid = (e: unknown) => isImgstreamError(e, ErrorCode.INVALID_INDEX);
  await assert.rejects(index([{ type: 'file', name: 'a/../../etc/passwd', content: 'x' }]), invalid);
  await assert.rejects(index([{ type: 'hardlink', name: 'h', target: 'missing' }]), invalid);
  await assert.rejects(index([{ type: 'file', name: 'f', content: 'x' }, { type: 'file', name: 'f/g', content: 'y' }]), invalid);
  assert.equal(normalisePath('./a//b/./c/'), 'a/b/c');
  assert.equal(normalisePath('/'), '');
});
