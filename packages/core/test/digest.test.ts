import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, ImgstreamError, parseDigest, sha256Digest, verifyDigest, Digester } from '@imgstream/core';

test('sha256Digest matches the known digest of the empty string', () => {
  assert.equal(sha256Digest(''), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});

test('parseDigest accepts sha256 and rejects malformed or unsupported digests with a code', () => {
  const good = sha256Digest('x');
  assert.equal(parseDigest(good), good);
  for (const bad of ['sha256:abc', 'sha256:' + 'A'.repeat(64), 'md5:abcd', 'sha512:' + 'a'.repeat(128), '', 42, null]) {
    assert.throws(() => parseDigest(bad), (err: unknown) => err instanceof ImgstreamError && err.code === ErrorCode.INVALID_DIGEST);
  }
  assert.throws(() => parseDigest('sha512:' + 'a'.repeat(128)), /unsupported digest algorithm/);
});

test('verifyDigest throws IMGSTREAM_DIGEST_MISMATCH with both digests', () => {
  const data = Buffer.from('hello');
  verifyDigest(data, sha256Digest(data));
  try {
    verifyDigest(Buffer.from('hellO'), sha256Digest(data), 'blob');
    assert.fail('expected a mismatch');
  } catch (err) {
    assert.ok(err instanceof ImgstreamError);
    assert.equal(err.code, ErrorCode.DIGEST_MISMATCH);
    assert.equal(err.fields.expected, sha256Digest(data));
    assert.equal(err.fields.actual, sha256Digest('hellO'));
    assert.equal((err.toJSON() as { code: string }).code, 'IMGSTREAM_DIGEST_MISMATCH');
  }
});

test('Digester digests incrementally', () => {
  const d = new Digester();
  d.update(Buffer.from('hel'));
  d.update(Buffer.from('lo'));
  assert.equal(d.bytes, 5);
  assert.equal(d.digest(), sha256Digest('hello'));
});
