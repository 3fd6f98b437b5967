import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import {
  ErrorCode,
  ImgstreamError,
  MediaType,
  DockerConfigCredentials,
  RegistryClient,
  parseReference,
  sha256Digest,
  type ImageIndex,
  type ImageManifest,
} from '@imgstream/core';
import { startBasicAuthRegistry, startRegistry, startTokenAuthRegistry } from '../helpers/registry.ts';
import { pushTinyImage } from '../helpers/registry-image.ts';
import { tempDir } from '../helpers/tmp.ts';

const code = (c: string) => (err: unknown) => err instanceof ImgstreamError && err.code === c;

function client(t: { after(fn: () => unknown): void }, options: ConstructorParameters<typeof RegistryClient>[0] = {}): RegistryClient {
  const c = new RegistryClient({ plainHttpLoopback: true, retryBaseDelayMs: 10, ...options });
  t.after(() => c.close());
  return c;
}

test('anonymous registry: push an image, resolve it, verify config, stream and range-read blobs', async (t) => {
  const reg = await startRegistry(t);
  const c = client(t);
  assert.equal((await c.ping(reg.host)).apiVersion, 'registry/2.0');
  const raw = randomBytes(300_000);
  const img = await pushTinyImage(c, `${reg.host}/demo/app:v1`, { rawLayers: [raw] });
  const ref = parseReference(`${reg.host}/demo/app:v1`);
  const resolved = await c.resolveImage(ref, { platform: { os: 'linux', architecture: 'amd64' } });
  assert.equal(resolved.digest, img.digest);
  assert.equal(resolved.indexDigest, undefined);
  assert.deepEqual(resolved.platform, { os: 'linux', architecture: 'amd64' });
  assert.equal(resolved.manifest.layers.length, 2);
  assert.deepEqual((resolved.config.rootfs as { diff_ids: string[] }).diff_ids.length, 2);
  // by digest
  const byDigest = await c.getManifest(parseReference(`${reg.host}/demo/app@${img.digest}`));
  assert.equal(byDigest.digest, img.digest);
  // whole blob stream, verified
  const layer = resolved.manifest.layers[1]!;
  const chunks: Buffer[] = [];
  for await (const chunk of c.blobStream(ref, layer)) chunks.push(chunk as Buffer);
  assert.ok(Buffer.concat(chunks).equals(raw));
  // range reads: exact bytes, past the end, empty
  const reader = c.blobReader(ref, layer);
  assert.equal(reader.size, raw.length);
  for (const [off, len] of [[0, 1], [0, 4096], [12345, 4096], [raw.length - 10, 10], [raw.length - 10, 100], [1, 299_998]] as const) {
    const got = await reader.readRange(off, len);
    assert.ok(Buffer.from(got).equals(raw.subarray(off, off + len)), `${off}+${len}`);
  }
  assert.equal((await reader.readRange(raw.length, 10)).length, 0);
  assert.equal((await reader.readRange(5, 0)).length, 0);
  await assert.rejects(reader.readRange(-1, 5), code(ErrorCode.INVALID_OPTION));
  // existence checks
  assert.equal(await c.blobExists(ref, layer.digest), raw.length);
  assert.equal(await c.blobExists(ref, sha256Digest('absent')), undefined);
});

test('manifest lists: platform selection from an OCI index and a Docker manifest list', async (t) => {
  const reg = await startRegistry(t);
  const c = client(t);
  const amd = await pushTinyImage(c, `${reg.host}/multi:amd64`, { platform: { os: 'linux', architecture: 'amd64' } });
  const arm = await pushTinyImage(c, `${reg.host}/multi:arm64`, { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [[{ path: 'a', content: 'arm' }]] });
  const ref = parseReference(`${reg.host}/multi:latest`);
  for (const [mediaType, manifestType] of [[MediaType.OCI_INDEX, MediaType.OCI_MANIFEST], [MediaType.DOCKER_MANIFEST_LIST, MediaType.DOCKER_MANIFEST]] as const) {
    if (manifestType === MediaType.DOCKER_MANIFEST) {
      // re-push the images as Docker schema 2 so the list is homogeneous
      await pushTinyImage(c, `${reg.host}/multi:amd64`, { format: 'docker' });
    }
    const index: ImageIndex = {
      schemaVersion: 2,
      mediaType,
      manifests: [
        { mediaType: MediaType.OCI_MANIFEST, digest: amd.digest, size: amd.manifestBytes.length, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: MediaType.OCI_MANIFEST, digest: arm.digest, size: arm.manifestBytes.length, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      ],
    };
    const pushed = await c.pushManifest(ref, index);
    const a = await c.resolveImage(ref, { platform: { os: 'linux', architecture: 'arm64' } });
    assert.equal(a.indexDigest, pushed.digest);
    assert.equal(a.digest, arm.digest);
    assert.deepEqual(a.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
    assert.equal((await c.resolveImage(ref, { platform: { os: 'linux', architecture: 'amd64' } })).digest, amd.digest);
    await assert.rejects(c.resolveImage(ref, { platform: { os: 'linux', architecture: 's390x' } }), code(ErrorCode.PLATFORM_NOT_FOUND));
  }
});

test('coded errors: unknown repository/tag/blob, wrong digest, malformed manifest, 416', async (t) => {
  const reg = await startRegistry(t);
  const c = client(t);
  const img = await pushTinyImage(c, `${reg.host}/e/app:v1`);
  await assert.rejects(c.getManifest(parseReference(`${reg.host}/e/app:nope`)), code(ErrorCode.REGISTRY_NOT_FOUND));
  await assert.rejects(c.getManifest(parseReference(`${reg.host}/none/such:v1`)), code(ErrorCode.REGISTRY_NOT_FOUND));
  const ref = parseReference(`${reg.host}/e/app:v1`);
  const layer = img.manifest.layers[0]!;
  // a descriptor with the right digest but a wrong size: the stream must error, not end
  await assert.rejects(c.fetchBlob(ref, { digest: layer.digest, size: layer.size + 1 }), code(ErrorCode.DIGEST_MISMATCH));
  await assert.rejects(c.fetchBlob(ref, { digest: sha256Digest('missing'), size: 3 }), code(ErrorCode.REGISTRY_NOT_FOUND));
  // docker-registry answers 416 for a range past the end: the reader clamps to its size, so lie about the size
  const liar = c.blobReader(ref, { digest: layer.digest, size: layer.size + 1000 });
  await assert.rejects(liar.readRange(layer.size + 10, 10), code(ErrorCode.RANGE_NOT_SATISFIABLE));
  // the registry refuses a manifest that references missing blobs; our own validation refuses garbage
  await assert.rejects(c.pushManifest(ref, Buffer.from('{"schemaVersion":2')), code(ErrorCode.INVALID_MANIFEST));
  const dangling: ImageManifest = { ...img.manifest, layers: [{ mediaType: MediaType.OCI_LAYER, digest: sha256Digest('nope'), size: 4 }] };
  await assert.rejects(c.pushManifest(parseReference(`${reg.host}/e/app:dangling`), dangling), (e: unknown) => e instanceof ImgstreamError && e.fields.status === 400);
  await assert.rejects(c.getManifest(parseReference(`${reg.host}/e/app:v1@${sha256Digest('other')}`)), code(ErrorCode.REGISTRY_NOT_FOUND));
  // closed client
  await c.close();
  assert.throws(() => c.blobReader(ref, layer), code(ErrorCode.CLOSED));
});

test('tags, and referrers through the tag-schema fallback (docker-registry 2.8 has no referrers API)', async (t) => {
  const reg = await startRegistry(t);
  const c = client(t);
  const img = await pushTinyImage(c, `${reg.host}/r/app:v1`);
  const ref = parseReference(`${reg.host}/r/app:v1`);
  const tagged = await c.tagManifest(ref, img.digest, 'stable');
  assert.equal(tagged.digest, img.digest);
  assert.equal((await c.getManifest(parseReference(`${reg.host}/r/app:stable`))).digest, img.digest);
  assert.deepEqual(await c.referrers(ref, img.digest), []);
  const empty = await c.pushBlob(ref, Buffer.from('{}'), { mediaType: MediaType.OCI_EMPTY });
  const pushArtifact = async (artifactType: string, payload: string) => {
    const blob = await c.pushBlob(ref, Buffer.from(payload), { mediaType: 'application/octet-stream' });
    const m: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      artifactType,
      config: { ...empty, mediaType: MediaType.OCI_EMPTY },
      layers: [blob],
      subject: { mediaType: MediaType.OCI_MANIFEST, digest: img.digest, size: img.manifestBytes.length },
      annotations: { 'org.example.payload': payload },
    };
    return c.pushManifest({ ...ref, tag: undefined }, m);
  };
  const a1 = await pushArtifact('application/vnd.imgstream.index.v1', 'one');
  const a2 = await pushArtifact('application/vnd.example.sbom', 'two');
  await pushArtifact('application/vnd.imgstream.index.v1', 'one'); // same digest again: no duplicate
  const all = await c.referrers(ref, img.digest);
  assert.deepEqual(all.map((d) => d.digest).sort(), [a1.digest, a2.digest].sort());
  const filtered = await c.referrers(ref, img.digest, { artifactType: 'application/vnd.imgstream.index.v1' });
  assert.deepEqual(filtered.map((d) => [d.digest, d.artifactType, d.annotations?.['org.example.payload']]), [[a1.digest, 'application/vnd.imgstream.index.v1', 'one']]);
  // the fallback tag holds an OCI index
  const fallback = await c.getManifest(parseReference(`${reg.host}/r/app:sha256-${img.digest.slice(7)}`));
  assert.equal(fallback.mediaType, MediaType.OCI_INDEX);
});

test('Basic auth registry: credentials from options; wrong or missing ones are IMGSTREAM_REGISTRY_UNAUTHORIZED', async (t) => {
  const reg = await startBasicAuthRegistry(t, { alice: 's3cret' });
  const good = client(t, { credentials: { [reg.host]: { username: 'alice', password: 's3cret' } } });
  const img = await pushTinyImage(good, `${reg.host}/b/app:v1`);
  const ref = parseReference(`${reg.host}/b/app:v1`);
  assert.equal((await good.resolveImage(ref, { platform: { os: 'linux', architecture: 'amd64' } })).digest, img.digest);
  const bytes = await good.blobReader(ref, img.manifest.layers[0]!).readRange(0, 10);
  assert.ok(Buffer.from(bytes).equals(img.layers[0]!.bytes.subarray(0, 10)));
  await assert.rejects(client(t).getManifest(ref), code(ErrorCode.REGISTRY_UNAUTHORIZED));
  await assert.rejects(client(t, { credentials: { [reg.host]: { username: 'alice', password: 'wrong' } } }).getManifest(ref), code(ErrorCode.REGISTRY_UNAUTHORIZED));
});

for (const algorithm of ['RS256', 'ES256'] as const) {
  test(`token auth registry (${algorithm}): tokens per scope are cached, pull-only users cannot push`, async (t) => {
    const { registry: reg, tokenServer } = await startTokenAuthRegistry(t, {
      algorithm,
      users: { alice: { password: 'pw' }, reader: { password: 'ro', actions: ['pull'] } },
    });
    const c = client(t, { credentials: { [reg.host]: { username: 'alice', password: 'pw' } } });
    const img = await pushTinyImage(c, `${reg.host}/tok/app:v1`, { rawLayers: [randomBytes(50_000)] });
    const ref = parseReference(`${reg.host}/tok/app:v1`);
    const before = c.tokenRequests;
    const reader = c.blobReader(ref, img.manifest.layers[1]!);
    for (let i = 0; i < 20; i++) {
      const got = await reader.readRange(i * 1000, 1000);
      assert.ok(Buffer.from(got).equals(img.layers[1]!.bytes.subarray(i * 1000, i * 1000 + 1000)));
    }
    // one token for the pull scope, then cached
    assert.equal(c.tokenRequests - before, 1);
    assert.ok(tokenServer.requests.some((r) => r.user === 'alice' && r.scopes.includes('repository:tok/app:pull,push')));
    assert.ok(tokenServer.requests.some((r) => r.user === 'alice' && r.scopes.includes('repository:tok/app:pull')));

    const reader2 = client(t, { credentials: { [reg.host]: { username: 'reader', password: 'ro' } } });
    assert.equal((await reader2.getManifest(ref)).digest, img.digest);
    await assert.rejects(reader2.pushBlob(parseReference(`${reg.host}/tok/other:v1`), Buffer.from('x')), code(ErrorCode.REGISTRY_UNAUTHORIZED));
    await assert.rejects(client(t).getManifest(ref), code(ErrorCode.REGISTRY_UNAUTHORIZED));
    await assert.rejects(client(t, { credentials: { [reg.host]: { username: 'alice', password: 'bad' } } }).getManifest(ref), code(ErrorCode.REGISTRY_UNAUTHORIZED));
  });
}

test('token expiry: a token past its expires_in is refreshed before use (injected clock)', async (t) => {
  const { registry: reg, tokenServer } = await startTokenAuthRegistry(t, { users: { alice: { password: 'pw' } }, expiresInSec: 60 });
  let now = Date.now();
  const c = client(t, { credentials: { [reg.host]: { username: 'alice', password: 'pw' } }, now: () => now });
  const img = await pushTinyImage(c, `${reg.host}/exp/app:v1`);
  const ref = parseReference(`${reg.host}/exp/app:v1`);
  const reader = c.blobReader(ref, img.manifest.layers[0]!);
  await reader.readRange(0, 5);
  const n = tokenServer.requests.length;
  now += 30_000;
  await reader.readRange(0, 5);
  assert.equal(tokenServer.requests.length, n, 'still valid: cached');
  now += 31_000;
  await reader.readRange(0, 5);
  assert.equal(tokenServer.requests.length, n + 1, 'expired: fetched again');
});

test('credentials from a Docker config credHelpers entry reach a Basic and a token registry', async (t) => {
  const basic = await startBasicAuthRegistry(t, { carol: 'pw-basic' });
  const { registry: token } = await startTokenAuthRegistry(t, { users: { dave: { password: 'pw-token' } } });
  const dir = await tempDir(t);
  const helper = join(dir, 'docker-credential-test');
  await writeFile(
    helper,
    [
      '#!/bin/sh',
      'read -r url',
      `case "$url" in`,
      `  ${basic.host}) echo '{"ServerURL":"x","Username":"carol","Secret":"pw-basic"}' ;;`,
      `  ${token.host}) echo '{"ServerURL":"x","Username":"dave","Secret":"pw-token"}' ;;`,
      '  *) echo "credentials not found in native keychain"; exit 1 ;;',
      'esac',
    ].join('\n') + '\n',
    { mode: 0o755 },
  );
  const path = join(dir, 'config.json');
  await writeFile(path, JSON.stringify({ credHelpers: { [basic.host]: 'test' }, credsStore: 'test' }));
  const c = client(t, { credentials: new DockerConfigCredentials({ path, helperDirs: [dir] }) });
  for (const host of [basic.host, token.host]) {
    const img = await pushTinyImage(c, `${host}/helper/app:v1`);
    assert.equal((await c.getManifest(parseReference(`${host}/helper/app:v1`))).digest, img.digest);
  }
});

test('bad options throw IMGSTREAM_INVALID_OPTION naming the option', () => {
  const named = (option: string) => (err: unknown) => err instanceof ImgstreamError && err.code === ErrorCode.INVALID_OPTION && err.fields.option === option;
  assert.throws(() => new RegistryClient({ maxRetries: -1 }), named('maxRetries'));
  assert.throws(() => new RegistryClient({ requestTimeoutMs: 0 }), named('requestTimeoutMs'));
  assert.throws(() => new RegistryClient({ maxManifestBytes: 1.5 }), named('maxManifestBytes'));
  assert.throws(() => new RegistryClient({ mirrors: { 'docker.io': [{ url: 'ftp://mirror' }] } }), named('mirrors["docker.io"]'));
  assert.throws(() => new RegistryClient({ credentials: { 'a.io': { username: 'x' } as never } }), named('credentials["a.io"]'));
});

test('interop with skopeo: it reads what the client pushed, and the client reads what skopeo pushed', async (t) => {
  const reg = await startRegistry(t);
  const c = client(t);
  const img = await pushTinyImage(c, `${reg.host}/interop/app:v1`, { layers: [[{ path: 'x.txt', content: 'x' }], [{ path: 'y.txt', content: 'y' }]] });
  const run = async (args: string[]) => (await promisify(execFile)('skopeo', args, { timeout: 60_000 })).stdout;
  const info = JSON.parse(await run(['inspect', '--tls-verify=false', `docker://${reg.host}/interop/app:v1`])) as { Digest: string; Layers: string[] };
  assert.equal(info.Digest, img.digest);
  assert.deepEqual(info.Layers, img.manifest.layers.map((l) => l.digest));
  await run(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--format', 'v2s2', `docker://${reg.host}/interop/app:v1`, `docker://${reg.host}/interop/copy:v2`]);
  const copied = await c.resolveImage(parseReference(`${reg.host}/interop/copy:v2`), { platform: { os: 'linux', architecture: 'amd64' } });
  assert.equal(copied.mediaType, MediaType.DOCKER_MANIFEST);
  assert.deepEqual(copied.manifest.layers.map((l) => l.digest), img.manifest.layers.map((l) => l.digest));
  assert.ok((await c.fetchBlob(parseReference(`${reg.host}/interop/copy:v2`), copied.manifest.layers[0]!)).equals(img.layers[0]!.bytes));
});
