import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, ImgstreamError } from '@imgstream/core';
import { Errno, errnoOf, escapeImageRef, imageDirName, layerDirName, parseLayerDirName, unescapeImageRef } from '@imgstream/fuse';

const hex = 'a'.repeat(64);

describe('mount names', () => {
  it('maps digests to directory names without ":"', () => {
    assert.equal(layerDirName(`sha256:${hex}`), `sha256=${hex}`);
    assert.equal(parseLayerDirName(`sha256=${hex}`), `sha256:${hex}`);
    assert.equal(parseLayerDirName('sha256=xyz'), undefined);
    assert.equal(parseLayerDirName('nothing'), undefined);
  });

  it('escapes image references reversibly, leaving no / : , @ in names', () => {
    for (const ref of ['docker.io/library/busybox:latest', 'localhost:5000/a/b@sha256:' + hex, "we!rd(ref)*~'x", 'ünïcode/ref:1,2']) {
      const e = escapeImageRef(ref);
      assert.match(e, /^[A-Za-z0-9._%-]+$/);
      assert.equal(unescapeImageRef(e), ref);
    }
    assert.equal(escapeImageRef('docker.io/library/busybox:1'), 'docker.io%2Flibrary%2Fbusybox%3A1');
    assert.equal(imageDirName('a/b:1', `sha256:${hex}`), `a%2Fb%3A1@sha256=${hex}`);
    assert.throws(() => unescapeImageRef('%zz'), { code: ErrorCode.INVALID_REFERENCE });
  });
});

describe('errno table', () => {
  it('maps core error codes, system errors and unknown errors', () => {
    assert.equal(errnoOf(new ImgstreamError(ErrorCode.NOT_FOUND, 'x')), Errno.ENOENT);
    assert.equal(errnoOf(new ImgstreamError(ErrorCode.DIGEST_MISMATCH, 'x')), Errno.EIO);
    assert.equal(errnoOf(new ImgstreamError(ErrorCode.TIMEOUT, 'x')), Errno.EIO);
    assert.equal(errnoOf(new ImgstreamError(ErrorCode.REGISTRY_UNAVAILABLE, 'x')), Errno.EIO);
    assert.equal(errnoOf(new ImgstreamError(ErrorCode.DISK_FULL, 'x')), Errno.ENOSPC);
    assert.equal(errnoOf(Object.assign(new Error('x'), { code: 'ENOENT' })), Errno.ENOENT);
    assert.equal(errnoOf(Object.assign(new Error('x'), { code: 'EACCES' })), Errno.EACCES);
    assert.equal(errnoOf(new Error('plain')), Errno.EIO);
    assert.equal(errnoOf(undefined), Errno.EIO);
    for (const code of Object.values(ErrorCode)) assert.ok(errnoOf(new ImgstreamError(code, 'x')) > 0, code);
  });
});
