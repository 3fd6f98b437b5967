import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { ErrorCode, ImgstreamError } from '@imgstream/core';

test('docs/errors.md documents every error code, and nothing else', async () => {
  const doc = await readFile(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
  const documented = [...doc.matchAll(/^## (IMGSTREAM_[A-Z0-9_]+)$/gm)].map((m) => m[1]);
  const codes = Object.values(ErrorCode);
  assert.deepEqual(codes.filter((c) => !documented.includes(c)), [], 'codes without a section');
  assert.deepEqual(documented.filter((c) => !codes.includes(c as ErrorCode)), [], 'sections without a code');
  assert.equal(new Set(codes).size, codes.length, 'codes are unique');
});

test('ImgstreamError carries code, fields and cause into toJSON', () => {
  const cause = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
  const err = new ImgstreamError(ErrorCode.REGISTRY_UNAVAILABLE, 'gave up', { status: 503, ref: 'r', cause });
  assert.deepEqual(err.toJSON(), {
    name: 'ImgstreamError',
    code: 'IMGSTREAM_REGISTRY_UNAVAILABLE',
    message: 'gave up',
    status: 503,
    ref: 'r',
    cause: { name: 'Error', message: 'socket hang up', code: 'ECONNRESET' },
  });
});
