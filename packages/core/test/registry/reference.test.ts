import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, ImgstreamError, formatReference, isLoopbackHost, parseReference, registryEndpointHost, withDigest } from '@imgstream/core';

const D = `sha256:${'ab'.repeat(32)}` as const;

const good: [string, string, string, string | undefined, string | undefined][] = [
  // input, registry, repository, tag, digest
  ['ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['ubuntu:22.04', 'docker.io', 'library/ubuntu', '22.04', undefined],
  ['library/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['docker.io/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['index.docker.io/library/ubuntu:x', 'docker.io', 'library/ubuntu', 'x', undefined],
  ['registry-1.docker.io/bitnami/redis', 'docker.io', 'bitnami/redis', 'latest', undefined],
  ['bitnami/redis:7.2', 'docker.io', 'bitnami/redis', '7.2', undefined],
  ['localhost/foo', 'localhost', 'foo', 'latest', undefined],
  ['localhost:5000/foo/bar:v1', 'localhost:5000', 'foo/bar', 'v1', undefined],
  ['127.0.0.1:5000/a', '127.0.0.1:5000', 'a', 'latest', undefined],
  ['[::1]:5000/a/b', '[::1]:5000', 'a/b', 'latest', undefined],
  ['ghcr.io/owner/repo/sub:tag_1.0-rc', 'ghcr.io', 'owner/repo/sub', 'tag_1.0-rc', undefined],
  [`ubuntu@${D}`, 'docker.io', 'library/ubuntu', undefined, D],
  [`ubuntu:22.04@${D}`, 'docker.io', 'library/ubuntu', '22.04', D],
  [`quay.io:443/a/b:t@${D}`, 'quay.io:443', 'a/b', 't', D],
  ['my-registry.example.com/a__b/c.d/e-f--g', 'my-registry.example.com', 'a__b/c.d/e-f--g', 'latest', undefined],
  ['Example.com/foo', 'Example.com', 'foo', 'latest', undefined],
  ['foo:5000', 'docker.io', 'library/foo', '5000', undefined],
];

test('parseReference normalises Docker Hub, registries with ports, localhost, tags and digests', () => {
  for (const [input, registry, repository, tag, digest] of good) {
    const r = parseReference(input);
    assert.deepEqual({ ...r }, { registry, repository, tag, digest }, input);
  }
});

test('formatReference round-trips the canonical form', () => {
  assert.equal(formatReference(parseReference('ubuntu')), 'docker.io/library/ubuntu:latest');
  assert.equal(formatReference(parseReference(`localhost:5000/a:b@${D}`)), `localhost:5000/a:b@${D}`);
  assert.equal(formatReference(withDigest(parseReference('a:b'), D)), `docker.io/library/a@${D}`);
  for (const [input] of good) {
    const once = formatReference(parseReference(input));
    assert.equal(formatReference(parseReference(once)), once);
  }
});

test('registryEndpointHost maps docker.io to registry-1.docker.io', () => {
  assert.equal(registryEndpointHost('docker.io'), 'registry-1.docker.io');
  assert.equal(registryEndpointHost('ghcr.io'), 'ghcr.io');
});

test('isLoopbackHost recognises loopback hosts only', () => {
  for (const h of ['localhost', 'localhost:5000', '127.0.0.1', '127.1.2.3:80', '[::1]:5000']) assert.ok(isLoopbackHost(h), h);
  for (const h of ['example.com', '10.0.0.1:5000', '128.0.0.1', 'localhost.example.com']) assert.ok(!isLoopbackHost(h), h);
});

test('parseReference rejects malformed references with IMGSTREAM_INVALID_REFERENCE', () => {
  const bad = [
    '',
    ' ',
    'UPPER',
    'docker.io/Library/ubuntu',
    'ubuntu:',
    'ubuntu:-tag',
    'ubuntu:' + 'a'.repeat(129),
    'ubuntu@sha256:abc',
    'ubuntu@md5:' + 'a'.repeat(32),
    `ubuntu@${D}x`,
    'a//b',
    '/ubuntu',
    'ubuntu/',
    'https://docker.io/ubuntu',
    'a b',
    'foo_/bar',
    'foo/-bar',
    'host:99999/a',
    'exa_mple.com/a',
    '-host.com/a',
    'a/' + 'b'.repeat(300),
    'ubuntu:tag:tag',
    '@' + D,
    'local host/a',
  ];
  for (const input of bad) {
    assert.throws(
      () => parseReference(input),
      (err: unknown) => err instanceof ImgstreamError && err.code === ErrorCode.INVALID_REFERENCE,
      JSON.stringify(input),
    );
  }
});
