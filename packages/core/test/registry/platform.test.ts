import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, ImgstreamError, formatPlatform, hostPlatform, parsePlatform, platformFromNode } from '@imgstream/core';

test('platformFromNode maps Node arch names to OCI names', () => {
  assert.deepEqual(platformFromNode('x64', 'linux'), { os: 'linux', architecture: 'amd64' });
  assert.deepEqual(platformFromNode('arm64', 'linux'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.deepEqual(platformFromNode('arm', 'linux', '6'), { os: 'linux', architecture: 'arm', variant: 'v6' });
  assert.deepEqual(platformFromNode('ia32', 'win32'), { os: 'windows', architecture: '386' });
  assert.deepEqual(platformFromNode('ppc64', 'linux'), { os: 'linux', architecture: 'ppc64le' });
  assert.equal(hostPlatform().os, process.platform === 'linux' ? 'linux' : hostPlatform().os);
  if (process.arch === 'x64') assert.equal(hostPlatform().architecture, 'amd64');
});

test('parsePlatform parses os/arch[/variant] and rejects the rest', () => {
  assert.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
  assert.deepEqual(parsePlatform('linux/arm/v7'), { os: 'linux', architecture: 'arm', variant: 'v7' });
  assert.deepEqual(parsePlatform('linux/arm64'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.equal(formatPlatform(parsePlatform('linux/arm/v6')), 'linux/arm/v6');
  for (const bad of ['linux', 'linux/', '/amd64', 'a/b/c/d', 'linux/AMD 64']) {
    assert.throws(() => parsePlatform(bad), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.INVALID_OPTION, bad);
  }
});
