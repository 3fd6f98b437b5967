import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, ImgstreamError, MediaType, parseManifest, selectPlatform, sha256Digest, type ImageIndex } from '@imgstream/core';

const d = (s: string) => sha256Digest(s);
const enc = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));
const code = (c: string) => (err: unknown) => err instanceof ImgstreamError && err.code === c;

const ociManifest = {
  schemaVersion: 2,
  mediaType: MediaType.OCI_MANIFEST,
  config: { mediaType: MediaType.OCI_CONFIG, digest: d('c'), size: 1 },
  layers: [{ mediaType: MediaType.OCI_LAYER_GZIP, digest: d('l'), size: 10, annotations: { a: 'b' } }],
};

test('parseManifest accepts OCI and Docker manifests and indexes', () => {
  const m = parseManifest(enc(ociManifest), MediaType.OCI_MANIFEST);
  assert.equal(m.kind, 'manifest');
  assert.equal(m.kind === 'manifest' && m.manifest.layers[0]?.size, 10);
  const docker = parseManifest(enc({ ...ociManifest, mediaType: MediaType.DOCKER_MANIFEST }), MediaType.DOCKER_MANIFEST);
  assert.equal(docker.kind === 'manifest' && docker.manifest.mediaType, MediaType.DOCKER_MANIFEST);
  // OCI without mediaType: from Content-Type, then from shape
  const { mediaType: _m, ...noType } = ociManifest;
  assert.equal(parseManifest(enc(noType)).kind, 'manifest');
  const index = { schemaVersion: 2, manifests: [{ mediaType: MediaType.OCI_MANIFEST, digest: d('m'), size: 5, platform: { os: 'linux', architecture: 'amd64' } }] };
  const i = parseManifest(enc(index), 'application/vnd.oci.image.index.v1+json; charset=utf-8');
  assert.equal(i.kind === 'index' && i.index.mediaType, MediaType.OCI_INDEX);
  const list = parseManifest(enc({ ...index, mediaType: MediaType.DOCKER_MANIFEST_LIST }));
  assert.equal(list.kind, 'index');
});

test('parseManifest refuses Docker schema 1 with IMGSTREAM_UNSUPPORTED_SCHEMA1', () => {
  assert.throws(() => parseManifest(enc({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] })), code(ErrorCode.UNSUPPORTED_SCHEMA1));
  assert.throws(() => parseManifest(enc('{}'), MediaType.DOCKER_SCHEMA1_SIGNED_MANIFEST), code(ErrorCode.UNSUPPORTED_SCHEMA1));
});

test('parseManifest rejects malformed documents with IMGSTREAM_INVALID_MANIFEST', () => {
  const bad: unknown[] = [
    'not json',
    '{"schemaVersion": 2,',
    '[]',
    'null',
    { schemaVersion: 3 },
    { ...ociManifest, schemaVersion: '2' },
    { ...ociManifest, config: undefined },
    { ...ociManifest, config: { ...ociManifest.config, digest: 'sha256:zz' } },
    { ...ociManifest, config: { ...ociManifest.config, digest: 'md5:' + 'a'.repeat(32) } },
    { ...ociManifest, config: { ...ociManifest.config, size: -1 } },
    { ...ociManifest, config: { ...ociManifest.config, size: 1.5 } },
    { ...ociManifest, config: { ...ociManifest.config, size: '1' } },
    { ...ociManifest, config: { ...ociManifest.config, mediaType: 'nonsense' } },
    { ...ociManifest, layers: 'x' },
    { ...ociManifest, layers: [null] },
    { ...ociManifest, layers: [{ ...ociManifest.layers[0], annotations: { a: 1 } }] },
    { ...ociManifest, layers: [{ ...ociManifest.layers[0], urls: [1] }] },
    { ...ociManifest, manifests: [] },
    { ...ociManifest, mediaType: MediaType.DOCKER_MANIFEST, layers: [] },
    { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [{ mediaType: MediaType.OCI_MANIFEST, digest: d('m'), size: 1, platform: { os: 'linux' } }] },
    { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: {} },
    { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [], layers: [] },
    { schemaVersion: 2 },
  ];
  for (const b of bad) assert.throws(() => parseManifest(enc(b)), code(ErrorCode.INVALID_MANIFEST), JSON.stringify(b));
  // Content-Type that contradicts the document
  assert.throws(() => parseManifest(enc(ociManifest), MediaType.OCI_INDEX), code(ErrorCode.INVALID_MANIFEST));
  assert.throws(() => parseManifest(enc({ ...ociManifest, mediaType: 'application/vnd.example+json' })), code(ErrorCode.UNSUPPORTED_MEDIA_TYPE));
});

test('selectPlatform picks os/arch/variant and lists what is offered otherwise', () => {
  const entry = (os: string, architecture: string, variant?: string) => ({
    mediaType: MediaType.OCI_MANIFEST,
    digest: d(`${os}/${architecture}/${variant}`),
    size: 1,
    platform: { os, architecture, ...(variant ? { variant } : {}) },
  });
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests: [entry('unknown', 'unknown'), entry('linux', 'amd64'), entry('linux', 'arm', 'v6'), entry('linux', 'arm', 'v7'), entry('linux', 'arm64', 'v8'), entry('windows', 'amd64')],
  };
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'amd64' }).digest, d('linux/amd64/undefined'));
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm64' }).digest, d('linux/arm64/v8'));
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'aarch64' }).digest, d('linux/arm64/v8'));
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm', variant: 'v7' }).digest, d('linux/arm/v7'));
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm', variant: 'v6' }).digest, d('linux/arm/v6'));
  assert.equal(selectPlatform(index, { os: 'windows', architecture: 'amd64' }).digest, d('windows/amd64/undefined'));
  assert.throws(
    () => selectPlatform(index, { os: 'linux', architecture: 's390x' }),
    (err: unknown) => err instanceof ImgstreamError && err.code === ErrorCode.PLATFORM_NOT_FOUND && /linux\/arm64\/v8/.test(err.message),
  );
  // arm v8 host can run v7 but prefers an exact match; v5 host cannot run v6
  const armOnly: ImageIndex = { ...index, manifests: [entry('linux', 'arm', 'v6'), entry('linux', 'arm', 'v7')] };
  assert.equal(selectPlatform(armOnly, { os: 'linux', architecture: 'arm', variant: 'v8' }).digest, d('linux/arm/v7'));
  assert.throws(() => selectPlatform(armOnly, { os: 'linux', architecture: 'arm', variant: 'v5' }), code(ErrorCode.PLATFORM_NOT_FOUND));
});
