import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { ErrorCode, ImgstreamError, RegistryClient, parseReference, type RegistryClientOptions } from '@imgstream/core';
import { startRegistry, startTokenAuthRegistry, type TestRegistry } from '../helpers/registry.ts';
import { startFaultProxy, type FaultRule } from '../helpers/fault-proxy.ts';
import { pushTinyImage, type PushedImage } from '../helpers/registry-image.ts';

type T = { after(fn: () => unknown): void };
const code = (...codes: string[]) => (err: unknown) => err instanceof ImgstreamError && codes.includes(err.code);
const BLOB = /\/blobs\/sha256:/;
const MANIFEST = /\/manifests\//;

function client(t: T, options: RegistryClientOptions = {}): RegistryClient {
  const c = new RegistryClient({ plainHttpLoopback: true, retryBaseDelayMs: 20, retryMaxDelayMs: 200, ...options });
  t.after(() => c.close());
  return c;
}

/** A registry with one image (a 1 MiB random layer), and a fault proxy in front of it. */
async function setup(t: T, rules: FaultRule[] = []): Promise<{ reg: TestRegistry; img: PushedImage; proxyHost: string; proxy: Awaited<ReturnType<typeof startFaultProxy>>; raw: Buffer }> {
  const reg = await startRegistry(t);
  const raw = randomBytes(1 << 20);
  const img = await pushTinyImage(client(t), `${reg.host}/f/app:v1`, { rawLayers: [raw] });
  const proxy = await startFaultProxy(t, reg.url, rules);
  return { reg, img, proxyHost: proxy.host, proxy, raw };
}

async function streamAll(c: RegistryClient, ref: string, d: { digest: `sha256:${string}`; size: number }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of c.blobStream(parseReference(ref), d)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

test('a 503 burst and a 429 with Retry-After are retried and recover', async (t) => {
  const { img, proxy, proxyHost } = await setup(t);
  const c = client(t);
  proxy.setRules([{ method: 'GET', path: MANIFEST, times: 3, fault: { kind: 'status', status: 503 } }]);
  const m = await c.getManifest(parseReference(`${proxyHost}/f/app:v1`));
  assert.equal(m.digest, img.digest);
  assert.equal(proxy.log.filter((e) => MANIFEST.test(e.path)).length, 4);
  proxy.setRules([{ method: 'GET', path: BLOB, times: 1, fault: { kind: 'status', status: 429, retryAfter: '1' } }]);
  const started = Date.now();
  const got = await c.blobReader(parseReference(`${proxyHost}/f/app:v1`), img.manifest.layers[1]!).readRange(100, 4096);
  const elapsed = Date.now() - started;
  assert.ok(Buffer.from(got).equals(img.layers[1]!.bytes.subarray(100, 4196)));
  assert.ok(elapsed >= 900 && elapsed < 5000, `Retry-After honoured: ${elapsed} ms`);
});

test('persistent 5xx fails with IMGSTREAM_REGISTRY_UNAVAILABLE within the retry budget', async (t) => {
  const { img, proxy, proxyHost } = await setup(t);
  proxy.setRules([{ path: BLOB, fault: { kind: 'status', status: 500 } }]);
  const c = client(t, { maxRetries: 3 });
  const started = Date.now();
  await assert.rejects(c.blobReader(parseReference(`${proxyHost}/f/app:v1`), img.manifest.layers[1]!).readRange(0, 10), code(ErrorCode.REGISTRY_UNAVAILABLE));
  assert.ok(Date.now() - started < 5000);
  assert.equal(proxy.log.filter((e) => BLOB.test(e.path)).length, 4);
  // a 429 whose Retry-After is huge is capped
  proxy.setRules([{ path: BLOB, times: 1, fault: { kind: 'status', status: 429, retryAfter: '3600' } }]);
  const capped = client(t, { maxRetryAfterMs: 200 });
  const s2 = Date.now();
  await capped.blobReader(parseReference(`${proxyHost}/f/app:v1`), img.manifest.layers[1]!).readRange(0, 10);
  assert.ok(Date.now() - s2 < 3000);
});

test('connection resets before headers and mid-body: streams and range reads resume with the right bytes', async (t) => {
  const { img, proxy, proxyHost, raw } = await setup(t);
  const ref = `${proxyHost}/f/app:v1`;
  const layer = img.manifest.layers[1]!;
  const c = client(t);
  proxy.setRules([
    { method: 'GET', path: BLOB, times: 1, fault: { kind: 'reset-before-headers' } },
    { method: 'GET', path: BLOB, times: 2, fault: { kind: 'reset-body', afterBytes: 100_000 } },
  ]);
  assert.ok((await streamAll(c, ref, layer)).equals(raw));
  const ranges = proxy.log.filter((e) => BLOB.test(e.path)).map((e) => e.headers.range);
  assert.deepEqual(ranges, [undefined, undefined, 'bytes=100000-', 'bytes=200000-']);
  assert.ok(ranges.includes('bytes=100000-'), `resumed from the break: ${JSON.stringify(ranges)}`);
  proxy.setRules([{ method: 'GET', path: BLOB, times: 2, fault: { kind: 'reset-body', afterBytes: 3000 } }]);
  const got = await c.blobReader(parseReference(ref), layer).readRange(5000, 200_000);
  assert.ok(Buffer.from(got).equals(raw.subarray(5000, 205_000)));
  const resumed = proxy.log.filter((e) => BLOB.test(e.path)).slice(-3).map((e) => e.headers.range);
  assert.deepEqual(resumed, ['bytes=5000-204999', 'bytes=8000-204999', 'bytes=11000-204999']);
});

test('resets on every attempt fail with a coded error in bounded time', async (t) => {
  const { img, proxy, proxyHost } = await setup(t);
  proxy.setRules([{ method: 'GET', path: BLOB, fault: { kind: 'reset-body', afterBytes: 10 } }]);
  const c = client(t, { maxRetries: 2 });
  const started = Date.now();
  await assert.rejects(streamAll(c, `${proxyHost}/f/app:v1`, img.manifest.layers[1]!), code(ErrorCode.REGISTRY_UNAVAILABLE));
  assert.ok(Date.now() - started < 5000);
});

test('a registry that ignores Range: the reader skips to the offset and returns exactly the slice', async (t) => {
  const { img, proxy, proxyHost, raw } = await setup(t, []);
  proxy.setRules([{ method: 'GET', path: BLOB, fault: { kind: 'ignore-range' } }]);
  const c = client(t);
  const reader = c.blobReader(parseReference(`${proxyHost}/f/app:v1`), img.manifest.layers[1]!);
  for (const [off, len] of [[0, 10], [4096, 4096], [raw.length - 4096, 4096], [700_000, 300_000], [raw.length - 1, 5]] as const) {
    assert.ok(Buffer.from(await reader.readRange(off, len)).equals(raw.subarray(off, off + len)), `${off}+${len}`);
  }
  assert.ok(proxy.log.every((e) => e.fault === 'ignore-range' || !BLOB.test(e.path)));
});

test('stalled bodies time out and are retried; stalls on every attempt fail with a coded error in bounded time', async (t) => {
  const { img, proxy, proxyHost, raw } = await setup(t);
  const ref = parseReference(`${proxyHost}/f/app:v1`);
  const layer = img.manifest.layers[1]!;
  const c = client(t, { bodyIdleTimeoutMs: 300, maxRetries: 2 });
  proxy.setRules([{ method: 'GET', path: BLOB, times: 1, fault: { kind: 'stall-body', afterBytes: 50_000 } }]);
  assert.ok(Buffer.from(await c.blobReader(ref, layer).readRange(0, 200_000)).equals(raw.subarray(0, 200_000)));
  proxy.setRules([{ method: 'GET', path: BLOB, fault: { kind: 'stall-body', afterBytes: 1000 } }]);
  const started = Date.now();
  await assert.rejects(c.blobReader(ref, layer).readRange(0, 200_000), code(ErrorCode.TIMEOUT, ErrorCode.REGISTRY_UNAVAILABLE));
  assert.ok(Date.now() - started < 5000, `bounded: ${Date.now() - started} ms`);
});

test('slow bodies still deliver the right bytes; abort rejects with signal.reason', async (t) => {
  const { img, proxy, proxyHost, raw } = await setup(t);
  const ref = parseReference(`${proxyHost}/f/app:v1`);
  const layer = img.manifest.layers[1]!;
  const c = client(t);
  proxy.setRules([{ method: 'GET', path: BLOB, fault: { kind: 'slow-body', chunkBytes: 8192, delayMs: 5 } }]);
  assert.ok(Buffer.from(await c.blobReader(ref, layer).readRange(1000, 64 * 1024)).equals(raw.subarray(1000, 1000 + 64 * 1024)));
  const reason = new Error('stop now');
  const ac = new AbortController();
  setTimeout(() => ac.abort(reason), 50);
  const started = Date.now();
  await assert.rejects(c.blobReader(ref, layer).readRange(0, raw.length, { signal: ac.signal }), (err: unknown) => err === reason);
  assert.ok(Date.now() - started < 2000);
  const ac2 = new AbortController();
  const stream = c.blobStream(ref, layer, { signal: ac2.signal });
  setTimeout(() => ac2.abort(reason), 50);
  await assert.rejects(
    (async () => {
      for await (const _ of stream) {
        /* drain */
      }
    })(),
    (err: unknown) => err === reason,
  );
  // an aborted signal before the call
  await assert.rejects(c.getManifest(ref, { signal: AbortSignal.abort(reason) }), (err: unknown) => err === reason);
});

test('corrupted bytes never pass as good: blob stream, manifest by digest and config fail with IMGSTREAM_DIGEST_MISMATCH', async (t) => {
  const { img, proxy, proxyHost } = await setup(t);
  const c = client(t);
  proxy.setRules([{ method: 'GET', path: BLOB, fault: { kind: 'corrupt-body', atByte: 777_777 } }]);
  const received: Buffer[] = [];
  const stream = c.blobStream(parseReference(`${proxyHost}/f/app:v1`), img.manifest.layers[1]!);
  await assert.rejects(
    (async () => {
      for await (const chunk of stream) received.push(chunk as Buffer);
    })(),
    code(ErrorCode.DIGEST_MISMATCH),
  );
  assert.ok(received.reduce((n, b) => n + b.length, 0) <= img.manifest.layers[1]!.size);
  proxy.setRules([{ method: 'GET', path: new RegExp(img.config.descriptor.digest), fault: { kind: 'corrupt-body', atByte: 3 } }]);
  await assert.rejects(c.resolveImage(parseReference(`${proxyHost}/f/app:v1`), { platform: { os: 'linux', architecture: 'amd64' } }), code(ErrorCode.DIGEST_MISMATCH));
  proxy.setRules([{ method: 'GET', path: MANIFEST, fault: { kind: 'corrupt-body', atByte: 5 } }]);
  await assert.rejects(c.getManifest(parseReference(`${proxyHost}/f/app@${img.digest}`)), code(ErrorCode.DIGEST_MISMATCH, ErrorCode.INVALID_MANIFEST));
});

test('an expired or revoked token (401 on a later request) is dropped, refetched, and the request retried', async (t) => {
  const { registry: reg } = await startTokenAuthRegistry(t, { users: { alice: { password: 'pw' } } });
  const creds = { username: 'alice', password: 'pw' };
  const img = await pushTinyImage(client(t, { credentials: { [reg.host]: creds } }), `${reg.host}/x/app:v1`, { rawLayers: [randomBytes(10_000)] });
  const proxy = await startFaultProxy(t, reg.url);
  const c = client(t, { credentials: { [proxy.host]: creds } });
  const reader = c.blobReader(parseReference(`${proxy.host}/x/app:v1`), img.manifest.layers[1]!);
  await reader.readRange(0, 10);
  const tokens = c.tokenRequests;
  proxy.setRules([{ method: 'GET', path: BLOB, times: 1, fault: { kind: 'drop-authorization' } }]);
  assert.ok(Buffer.from(await reader.readRange(10, 100)).equals(img.layers[1]!.bytes.subarray(10, 110)));
  assert.equal(c.tokenRequests, tokens + 1);
  // always rejected: a coded error, not a loop
  proxy.setRules([{ method: 'GET', path: BLOB, fault: { kind: 'drop-authorization' } }]);
  await assert.rejects(reader.readRange(0, 10), code(ErrorCode.REGISTRY_UNAUTHORIZED));
});

test('redirects to a storage origin are followed without sending Authorization there', async (t) => {
  const reg = await startRegistry(t);
  const raw = randomBytes(100_000);
  const img = await pushTinyImage(client(t), `${reg.host}/s/app:v1`, { rawLayers: [raw] });
  const storage = await startFaultProxy(t, reg.url);
  // the front registry wants credentials everywhere and redirects blob downloads to "storage"
  const front = await startFaultProxy(t, reg.url, [
    { method: 'GET', path: /^\/v2\/$/, fault: { kind: 'require-authorization' } },
    { method: 'GET', path: BLOB, fault: { kind: 'redirect', status: 307, to: (p) => `${storage.url}${p}` } },
    { fault: { kind: 'require-authorization' } },
  ]);
  const c = client(t, { credentials: { [front.host]: { username: 'u', password: 'p' } } });
  const ref = parseReference(`${front.host}/s/app:v1`);
  await c.ping(front.host); // learns the Basic challenge
  const m = await c.getManifest(ref);
  assert.equal(m.digest, img.digest);
  assert.ok(front.log.some((e) => typeof e.headers.authorization === 'string' && e.headers.authorization.startsWith('Basic ')));
  assert.ok(Buffer.from(await c.blobReader(ref, img.manifest.layers[1]!).readRange(50, 1000)).equals(raw.subarray(50, 1050)));
  assert.ok((await streamAll(c, `${front.host}/s/app:v1`, img.manifest.layers[1]!)).equals(raw));
  assert.ok(storage.log.length >= 2);
  const frontBlobGets = front.log.filter((e) => BLOB.test(e.path));
  assert.ok(frontBlobGets.length >= 1 && frontBlobGets.every((e) => e.headers.authorization?.startsWith('Basic ')), 'the registry itself got credentials');
  assert.ok(storage.log.every((e) => e.headers.authorization === undefined), 'no Authorization sent to the storage origin');
});

test('a blob read goes straight to where the registry last redirected it, until that is stale or fails', async (t) => {
  const reg = await startRegistry(t);
  const raw = randomBytes(200_000);
  const img = await pushTinyImage(client(t), `${reg.host}/r/app:v1`, { rawLayers: [raw] });
  const storage = await startFaultProxy(t, reg.url);
  const front = await startFaultProxy(t, reg.url, [{ method: 'GET', path: BLOB, fault: { kind: 'redirect', status: 307, to: (p) => `${storage.url}${p}` } }]);
  let now = 1_000_000;
  const c = client(t, { now: () => now, blobLocationTtlMs: 60_000 });
  const ref = parseReference(`${front.host}/r/app:v1`);
  const layer = img.manifest.layers[1]!;
  const reader = c.blobReader(ref, layer);
  const frontGets = () => front.log.filter((e) => BLOB.test(e.path) && e.path.includes(layer.digest)).length;
  const storageGets = () => storage.log.filter((e) => e.path.includes(layer.digest)).length;
  const dropped: unknown[] = [];
  const onDrop = (m: unknown) => dropped.push(m);
  diagnostics.subscribe('imgstream:core:registry-blob-location-dropped', onDrop);
  t.after(() => diagnostics.unsubscribe('imgstream:core:registry-blob-location-dropped', onDrop));
  // ten range reads and a whole download: the registry is asked once
  for (let i = 0; i < 10; i++) assert.ok(Buffer.from(await reader.readRange(i * 1000, 500)).equals(raw.subarray(i * 1000, i * 1000 + 500)));
  assert.ok((await streamAll(c, `${front.host}/r/app:v1`, layer)).equals(raw));
  assert.equal(frontGets(), 1);
  assert.equal(storageGets(), 11);
  // another blob has its own entry
  await c.fetchBlob(ref, img.manifest.config);
  assert.equal(front.log.filter((e) => e.path.includes(img.manifest.config.digest)).length, 1);
  // the storage URL stops working (an expired signature): dropped, the registry asked again, the read succeeds
  storage.setRules([{ method: 'GET', times: 1, fault: { kind: 'status', status: 403 } }]);
  assert.ok(Buffer.from(await reader.readRange(7, 70)).equals(raw.subarray(7, 77)));
  assert.equal(frontGets(), 2);
  assert.equal(storageGets(), 13);
  assert.equal(dropped.length, 1);
  assert.match((dropped[0] as { reason: string }).reason, /HTTP 403/);
  // reused again after the refresh
  await reader.readRange(0, 10);
  assert.equal(frontGets(), 2);
  // stale after the TTL: the registry is asked again
  now += 60_001;
  await reader.readRange(0, 10);
  assert.equal(frontGets(), 3);
  // a storage origin that is gone: the registry is asked, and its fresh redirect is used
  const storage2 = await startFaultProxy(t, reg.url);
  front.setRules([{ method: 'GET', path: BLOB, fault: { kind: 'redirect', status: 307, to: (p) => `${storage2.url}${p}` } }]);
  await storage.stop();
  assert.ok(Buffer.from(await reader.readRange(100, 1000)).equals(raw.subarray(100, 1100)));
  assert.equal(frontGets(), 4);
  assert.equal(storage2.log.length, 1);
  assert.equal(dropped.length, 2);
  // 0 turns it off: every read asks the registry
  const off = client(t, { blobLocationTtlMs: 0 });
  const before = frontGets();
  for (let i = 0; i < 3; i++) await off.blobReader(ref, layer).readRange(i, 1);
  assert.equal(frontGets(), before + 3);
});

test('mirrors: a working mirror serves pulls; a failing one falls back to the registry', async (t) => {
  const reg = await startRegistry(t);
  const img = await pushTinyImage(client(t), `${reg.host}/m/app:v1`);
  const mirror = await startFaultProxy(t, reg.url);
  const upstream = await startFaultProxy(t, reg.url);
  const c = client(t, { mirrors: { [upstream.host]: [{ url: mirror.url }] } });
  const ref = parseReference(`${upstream.host}/m/app:v1`);
  const resolved = await c.resolveImage(ref, { platform: { os: 'linux', architecture: 'amd64' } });
  assert.equal(resolved.digest, img.digest);
  assert.ok(mirror.log.length >= 2);
  assert.ok(mirror.log.every((e) => e.path.includes(`ns=${encodeURIComponent(upstream.host)}`)));
  assert.equal(upstream.log.length, 0);
  mirror.setRules([{ fault: { kind: 'status', status: 502 } }]);
  const beforeBroken = mirror.log.length;
  const c2 = client(t, { mirrors: { [upstream.host]: [{ url: mirror.url }] }, maxRetries: 1 });
  assert.equal((await c2.resolveImage(ref, { platform: { os: 'linux', architecture: 'amd64' } })).digest, img.digest);
  assert.ok(upstream.log.length >= 2, 'fell back to the registry');
  // the broken mirror is now skipped (cooldown), so many small reads do not pay for it each time
  const seen = mirror.log.length;
  const reader = c2.blobReader(ref, img.manifest.layers[0]!);
  for (let i = 0; i < 10; i++) assert.ok(Buffer.from(await reader.readRange(i, 1)).equals(img.layers[0]!.bytes.subarray(i, i + 1)));
  assert.equal(mirror.log.length, seen);
  assert.ok(seen - beforeBroken <= 2, `one mirror attempt and at most one retry: ${seen - beforeBroken}`);
  // a mirror that merely lacks the content (404) is not put in cooldown
  const sparse = await startFaultProxy(t, reg.url, [{ path: /\/manifests\//, times: 1, fault: { kind: 'status', status: 404 } }]);
  const c4 = client(t, { mirrors: { [upstream.host]: [{ url: sparse.url }] } });
  await c4.getManifest(ref);
  await c4.getManifest(ref);
  assert.equal(sparse.log.filter((e) => /manifests/.test(e.path)).length, 2);
  // resolve-only mirrors do not serve tags when they lack the capability
  const pullOnly = await startFaultProxy(t, reg.url);
  const c3 = client(t, { mirrors: { [upstream.host]: [{ url: pullOnly.url, capabilities: ['pull'] }] } });
  await c3.resolveImage(ref, { platform: { os: 'linux', architecture: 'amd64' } });
  assert.ok(pullOnly.log.every((e) => !/manifests\/v1/.test(e.path)));
  assert.ok(pullOnly.log.some((e) => BLOB.test(e.path)));
});

test('a registry that serves a Docker schema 1 manifest or a malformed one gets a coded error', async (t) => {
  const { proxy, proxyHost } = await setup(t);
  const c = client(t);
  const ref = parseReference(`${proxyHost}/f/app:v1`);
  const schema1 = JSON.stringify({ schemaVersion: 1, name: 'f/app', tag: 'v1', architecture: 'amd64', fsLayers: [], history: [] });
  proxy.setRules([{ method: 'GET', path: MANIFEST, fault: { kind: 'status', status: 200, body: schema1, contentType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' } }]);
  await assert.rejects(c.resolveImage(ref), code(ErrorCode.UNSUPPORTED_SCHEMA1));
  proxy.setRules([{ method: 'GET', path: MANIFEST, fault: { kind: 'status', status: 200, body: '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}', contentType: 'application/vnd.oci.image.manifest.v1+json' } }]);
  await assert.rejects(c.resolveImage(ref), code(ErrorCode.INVALID_MANIFEST));
  proxy.setRules([{ method: 'GET', path: MANIFEST, fault: { kind: 'status', status: 200, body: 'x'.repeat(2048), contentType: 'application/vnd.oci.image.manifest.v1+json' } }]);
  await assert.rejects(client(t, { maxManifestBytes: 1024 }).resolveImage(ref), code(ErrorCode.LIMIT_EXCEEDED));
});

test('a registry with the OCI 1.1 referrers API is asked directly, with and without server-side filtering', async (t) => {
  const { img, proxy, proxyHost } = await setup(t);
  const c = client(t);
  const ref = parseReference(`${proxyHost}/f/app:v1`);
  const entry = (n: string, artifactType: string) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${n.repeat(64)}`, size: 10, artifactType });
  const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [entry('a', 'application/vnd.x'), entry('b', 'application/vnd.y')] };
  proxy.setRules([{ method: 'GET', path: /\/referrers\//, fault: { kind: 'status', status: 200, body: JSON.stringify(index), contentType: 'application/vnd.oci.image.index.v1+json' } }]);
  assert.deepEqual((await c.referrers(ref, img.digest)).map((d) => d.artifactType), ['application/vnd.x', 'application/vnd.y']);
  // the server ignored the filter (no OCI-Filters-Applied): the client filters
  assert.deepEqual((await c.referrers(ref, img.digest, { artifactType: 'application/vnd.y' })).map((d) => d.digest), [`sha256:${'b'.repeat(64)}`]);
  const referrerRequests = proxy.log.filter((e) => /\/referrers\//.test(e.path));
  assert.equal(referrerRequests.length, 2);
  assert.match(referrerRequests[1]!.path, /artifactType=application%2Fvnd\.y/);
  // the first query also asked for the fallback tag, before the API was known to exist; later ones do not
  assert.equal(proxy.log.filter((e) => /manifests\/sha256-/.test(e.path)).length, 1);
});

test('without the referrers API, the fallback tag is asked for at the same time, then alone; queries of one subject at once share it', async (t) => {
  const { img, proxy, proxyHost } = await setup(t);
  const c = client(t);
  const ref = parseReference(`${proxyHost}/f/app:v1`);
  const TAG = /\/manifests\/sha256-/;
  // the registry's 404 to the referrers query is held until the fallback tag's request arrives
  proxy.setRules([{ method: 'GET', path: /\/referrers\//, fault: { kind: 'hold', until: TAG, timeoutMs: 10_000 } }]);
  assert.deepEqual(await c.referrers(ref, img.digest), []);
  assert.deepEqual(
    proxy.log.filter((e) => /\/referrers\//.test(e.path)).map((e) => e.held),
    ['released'],
  );
  // known to be missing now: only the tag
  const before = proxy.log.length;
  assert.deepEqual(await c.referrers(ref, img.digest, { artifactType: 'application/vnd.x' }), []);
  assert.deepEqual(
    proxy.log.slice(before).map((e) => TAG.test(e.path)),
    [true],
  );
  // queries of one subject at the same time share the tag's request; a caller that gives up does
  // not fail the others
  const shared = client(t);
  const tagsBefore = proxy.log.filter((e) => TAG.test(e.path)).length;
  const giveUp = new AbortController();
  const [a, b, gaveUp] = await Promise.allSettled([
    shared.referrers(ref, img.digest, { artifactType: 'application/vnd.x' }),
    shared.referrers(ref, img.digest),
    shared.referrers(ref, img.digest, { signal: giveUp.signal }).finally(() => undefined),
    giveUp.abort(new Error('gave up')),
  ]);
  assert.deepEqual([a.status, b.status, gaveUp.status], ['fulfilled', 'fulfilled', 'rejected']);
  assert.equal(proxy.log.filter((e) => TAG.test(e.path)).length - tagsBefore, 1);
});

test("resolveImage's onManifest runs before the config is fetched, once, with the platform manifest", async (t) => {
  const { img, proxy, proxyHost } = await setup(t);
  const c = client(t);
  const ref = parseReference(`${proxyHost}/f/app:v1`);
  const config = new RegExp(`/blobs/${img.manifest.config.digest}`);
  // the config is served only once the referrers query made from onManifest has arrived
  proxy.setRules([{ method: 'GET', path: config, fault: { kind: 'hold', until: /\/referrers\//, timeoutMs: 10_000 } }]);
  const seen: string[] = [];
  let lookup: Promise<unknown> | undefined;
  const image = await c.resolveImage(ref, {
    platform: { os: 'linux', architecture: 'amd64' },
    onManifest: ({ digest, manifest }) => {
      seen.push(digest);
      assert.equal(manifest.config.digest, img.manifest.config.digest);
      lookup = c.referrers(ref, digest);
    },
  });
  assert.deepEqual(seen, [image.digest]);
  assert.deepEqual(await lookup, []);
  assert.deepEqual(proxy.log.filter((e) => config.test(e.path)).map((e) => e.held), ['released']);
});
