import { test } from 'node:test';
import assert from 'node:assert/strict';
import diagnosticsChannel from 'node:diagnostics_channel';
import { ErrorCode, ImgstreamError } from '@imgstream/core';
import { EventReporter, loadKubeClient, type EventReporterOptions } from '@imgstream/k8s-events';
import { startKubeApiServer, type KubeApiServer } from '../../../test/helpers/kube-api-server.ts';
import { ManualClock } from '../../../test/helpers/manual-clock.ts';

const LAYER_A = `sha256:${'a'.repeat(64)}`;
const LAYER_B = `sha256:${'b'.repeat(64)}`;
const MANIFEST = `sha256:${'0123456789ab'.repeat(5)}abcd`;

async function setup(
  t: { after(fn: () => unknown): void },
  options: Partial<EventReporterOptions> = {},
  serverOptions: Parameters<typeof startKubeApiServer>[1] = {},
): Promise<{ server: KubeApiServer; clock: ManualClock; reporter: EventReporter }> {
  const server = await startKubeApiServer(t, serverOptions);
  const client = await loadKubeClient({ kubeconfigPath: server.kubeconfigPath });
  const clock = new ManualClock();
  const reporter = new EventReporter({ client, nodeName: 'node-a', clock, retryJitter: 0, ...options });
  t.after(() => reporter.destroy());
  return { server, clock, reporter };
}

function eventsWith(server: KubeApiServer, reason: string): ReturnType<KubeApiServer['events']> {
  return server.events().filter((e) => e.reason === reason);
}

/** Collects messages published on a diagnostics channel for the rest of the test. */
function collect(t: { after(fn: () => unknown): void }, name: string): unknown[] {
  const seen: unknown[] = [];
  const fn = (msg: unknown): void => void seen.push(msg);
  diagnosticsChannel.subscribe(name, fn);
  t.after(() => diagnosticsChannel.unsubscribe(name, fn));
  return seen;
}

test('ImageStreaming and fallback Warnings arrive as core/v1 Events about the Node with every field right', async (t) => {
  const { server, clock, reporter } = await setup(t);
  reporter.imageStreaming({ image: 'docker.io/library/nginx:1.27', manifestDigest: MANIFEST, layers: [LAYER_A, LAYER_B] });
  reporter.layerFallback({ image: 'docker.io/library/nginx:1.27', layerDigest: LAYER_A, reason: 'no-index' });
  reporter.layerFallback({ image: 'docker.io/library/nginx:1.27', layerDigest: LAYER_B, reason: 'unsupported-media-type', detail: 'application/vnd.oci.image.layer.v1.tar+zstd' });
  reporter.layerFallback({ image: 'registry.local/old:1', reason: 'schema1' });
  reporter.layerFallback({ image: 'registry.local/private:2', code: ErrorCode.REGISTRY_UNAUTHORIZED });
  reporter.layerFallback({ image: 'registry.local/flaky:3', layerDigest: LAYER_B, code: ErrorCode.REGISTRY_UNAVAILABLE });
  await server.waitFor(() => server.events().length === 6, '6 events');
  await reporter.close(); // the 6th answer may still be on its way to the reporter

  assert.deepEqual(server.violations, []);
  const byReason = new Map(server.events().map((e) => [e.reason as string, e]));
  assert.deepEqual([...byReason.keys()].sort(), [
    'ImageStreaming',
    'StreamingFallbackAuth',
    'StreamingFallbackFetchFailed',
    'StreamingFallbackMediaType',
    'StreamingFallbackNoIndex',
    'StreamingFallbackSchema1',
  ]);
  const streaming = byReason.get('ImageStreaming')!;
  const stamp = new Date(clock.now()).toISOString().replace('.000Z', 'Z');
  assert.equal(streaming.type, 'Normal');
  assert.equal(streaming.message, 'Image docker.io/library/nginx:1.27 is backed by image streaming (manifest sha256:0123456789ab, 2 layers streamed).');
  assert.deepEqual(streaming.involvedObject, { apiVersion: 'v1', kind: 'Node', name: 'node-a', uid: 'uid-node-a' });
  assert.deepEqual(streaming.source, { component: 'imgstreamd', host: 'node-a' });
  assert.equal(streaming.reportingComponent, 'imgstreamd');
  assert.equal(streaming.reportingInstance, 'node-a');
  assert.equal(streaming.count, 1);
  assert.equal(streaming.firstTimestamp, stamp);
  assert.equal(streaming.lastTimestamp, stamp);
  assert.equal(streaming.metadata.namespace, 'default');
  assert.match(streaming.metadata.name ?? '', /^node-a\.[0-9a-f]+$/);

  for (const e of server.events()) {
    if (e.reason === 'ImageStreaming') continue;
    assert.equal(e.type, 'Warning', e.reason);
    assert.equal(e.involvedObject.name, 'node-a');
  }
  assert.equal(
    byReason.get('StreamingFallbackNoIndex')!.message,
    `Layer ${LAYER_A} of image docker.io/library/nginx:1.27 is pulled in full: it has no seekable index (build one with \`imgstream index\`).`,
  );
  assert.equal(
    byReason.get('StreamingFallbackMediaType')!.message,
    `Layer ${LAYER_B} of image docker.io/library/nginx:1.27 is pulled in full: its media type cannot be streamed: application/vnd.oci.image.layer.v1.tar+zstd.`,
  );
  assert.equal(byReason.get('StreamingFallbackSchema1')!.message, 'Image registry.local/old:1 is pulled in full: it is a Docker schema 1 image.');
  assert.equal(
    byReason.get('StreamingFallbackAuth')!.message,
    'Image registry.local/private:2 is pulled in full: the registry refused the credentials [IMGSTREAM_REGISTRY_UNAUTHORIZED].',
  );
  assert.match(byReason.get('StreamingFallbackFetchFailed')!.message ?? '', /^Layer sha256:b{64} of image registry\.local\/flaky:3 is pulled in full: fetching .* \[IMGSTREAM_REGISTRY_UNAVAILABLE\]\.$/);

  // one GET of the node for its UID, then one POST per event, all with the right verbs and content types
  const verbs = server.requests.map((r) => `${r.method} ${r.path} ${r.contentType ?? '-'} ${r.status}`);
  assert.equal(verbs[0], 'GET /api/v1/nodes/node-a - 200');
  assert.deepEqual(verbs.slice(1), Array(6).fill('POST /api/v1/namespaces/default/events application/json 201'));
  assert.deepEqual(reporter.stats(), { reported: 6, created: 6, patched: 0, dropped: 0, retries: 0, queued: 0 });
});

test('repeats within the window aggregate into one Event whose count rises; after the window a new Event starts', async (t) => {
  const { server, clock, reporter } = await setup(t, { nodeUid: 'uid-given', aggregationWindowMs: 60_000 });
  const report = { image: 'docker.io/library/redis:7', layerDigest: LAYER_A, reason: 'no-index' } as const;
  reporter.layerFallback(report);
  await server.waitFor(() => server.events().length === 1, 'the first event');
  const created = server.events()[0]!;
  assert.equal(created.count, 1);
  assert.equal(created.involvedObject.uid, 'uid-given');

  clock.advance(5_000);
  reporter.layerFallback(report);
  reporter.layerFallback(report);
  await server.waitFor(() => server.events()[0]!.count === 3, 'count 3');
  clock.advance(20_000);
  reporter.layerFallback(report);
  await server.waitFor(() => server.events()[0]!.count === 4, 'count 4');

  assert.equal(server.events().length, 1, 'one Event object for all repeats');
  const ev = server.events()[0]!;
  assert.equal(ev.metadata.name, created.metadata.name);
  assert.equal(ev.firstTimestamp, created.firstTimestamp);
  assert.equal(Date.parse(ev.lastTimestamp ?? '') - Date.parse(ev.firstTimestamp ?? ''), 25_000);
  const patches = server.requests.filter((r) => r.method === 'PATCH');
  assert.ok(patches.length >= 2 && patches.length <= 3, `patches: ${patches.length}`);
  for (const p of patches) {
    assert.equal(p.path, `/api/v1/namespaces/default/events/${created.metadata.name}`);
    assert.equal(p.contentType, 'application/strategic-merge-patch+json');
    assert.deepEqual(Object.keys(p.body as object).sort(), ['count', 'lastTimestamp']);
  }
  assert.equal(server.requests.filter((r) => r.method === 'GET').length, 0, 'no UID lookup when nodeUid is given');

  // a different message is a different event; the same one after the window is a new object
  reporter.layerFallback({ ...report, layerDigest: LAYER_B });
  clock.advance(61_000);
  reporter.layerFallback(report);
  await server.waitFor(() => server.events().length === 3, '3 events');
  const counts = server.events().map((e) => [e.message?.includes(LAYER_A) ? 'A' : 'B', e.count]);
  assert.deepEqual(counts, [['A', 4], ['B', 1], ['A', 1]]);
  assert.deepEqual(server.violations, []);
});

test('a burst of identical reports before the first write costs one request', async (t) => {
  const { server, reporter } = await setup(t, { lookupNodeUid: false });
  for (let i = 0; i < 100; i++) reporter.layerFallback({ image: 'registry.local/x:1', layerDigest: LAYER_A, reason: 'no-index' });
  await reporter.close();
  assert.equal(server.requests.length, 1);
  assert.equal(server.events()[0]!.count, 100);
  assert.deepEqual(reporter.stats(), { reported: 100, created: 1, patched: 0, dropped: 0, retries: 0, queued: 0 });
});

test('the token bucket holds: a burst of writes, then one per refill interval, with nothing lost', async (t) => {
  const { server, clock, reporter } = await setup(t, { eventsPerSecond: 0.5, eventBurst: 3, lookupNodeUid: false });
  for (let i = 0; i < 8; i++) reporter.imageStreaming({ image: `registry.local/app-${i}:1` });
  await server.waitFor(() => server.events().length === 3, 'the burst');
  await clock.waitForTimer(); // the sender now waits for a token
  assert.equal(clock.nextDelayMs(), 2000, 'one token every 2 s');
  assert.equal(server.events().length, 3);
  assert.equal(reporter.stats().queued, 5);

  clock.advance(1999);
  assert.equal(reporter.stats().queued, 5, 'no token before 2 s');
  clock.advance(1);
  await server.waitFor(() => server.events().length === 4, 'the 4th event');
  await clock.waitForTimer();
  assert.equal(server.events().length, 4);

  clock.advance(4000); // two tokens' worth of time: the sender takes them one by one
  await server.waitFor(() => server.events().length === 6, 'events 5 and 6');
  await clock.waitForTimer();
  assert.equal(server.events().length, 6);
  clock.advance(4000);
  await server.waitFor(() => server.events().length === 8, 'all 8 events');
  assert.deepEqual(
    server.events().map((e) => e.message),
    Array.from({ length: 8 }, (_, i) => `Image registry.local/app-${i}:1 is backed by image streaming.`),
    'in order',
  );
  assert.equal(server.requests.length, 8, 'one write per token, no retries');
  assert.deepEqual(server.violations, []);
});

test('an API server that is down at first: calls return at once, events arrive aggregated after it comes back', async (t) => {
  const retries = collect(t, 'imgstream:k8s-events:retry');
  const { server, clock, reporter } = await setup(t, { retryInitialDelayMs: 500, retryMaxDelayMs: 4000 }, { startDown: true });

  const durations: number[] = [];
  const call = (fn: () => void): void => {
    const start = performance.now();
    fn();
    durations.push(performance.now() - start);
  };
  for (let i = 0; i < 5; i++) call(() => reporter.imageStreaming({ image: 'docker.io/library/nginx:1.27', layers: 3 }));
  call(() => reporter.layerFallback({ image: 'docker.io/library/nginx:1.27', layerDigest: LAYER_A, reason: 'no-index' }));

  // the sender fails (connection refused) and backs off: 500, 1000, 2000, 4000, 4000 ms
  const delays: number[] = [];
  for (let i = 0; i < 5; i++) {
    await clock.waitForTimer();
    delays.push(clock.advanceToNext());
    // more reports while the API server is unreachable and a request may be in flight
    call(() => reporter.imageStreaming({ image: 'docker.io/library/nginx:1.27', layers: 3 }));
  }
  await clock.waitForTimer(); // the 6th attempt failed too
  assert.equal(clock.nextDelayMs(), 4000);
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 4000]);
  assert.equal(retries.length, 6);
  assert.equal(server.requests.length, 0);
  assert.ok(Math.max(...durations) < 5, `calls took ${durations.map((d) => d.toFixed(2)).join(', ')} ms`);

  await server.up();
  clock.advanceToNext();
  await server.waitFor(() => server.events().length === 2 && server.events()[0]!.count === 10, 'both events, count 10');
  const streaming = eventsWith(server, 'ImageStreaming');
  assert.equal(streaming.length, 1);
  assert.equal(streaming[0]!.count, 10);
  assert.equal(streaming[0]!.involvedObject.uid, 'uid-node-a');
  assert.equal(eventsWith(server, 'StreamingFallbackNoIndex')[0]!.count, 1);
  assert.equal(reporter.stats().dropped, 0);
  assert.deepEqual(server.violations, []);
  await reporter.close();
});

test('503 answers are retried with backoff like an unreachable server', async (t) => {
  const { server, clock, reporter } = await setup(t, { lookupNodeUid: false });
  server.failWith(503);
  reporter.layerFallback({ image: 'registry.local/x:1', layerDigest: LAYER_A, reason: 'fetch-failed' });
  await clock.waitForTimer();
  assert.equal(server.requests.at(-1)?.status, 503);
  assert.equal(clock.advanceToNext(), 500);
  await clock.waitForTimer();
  assert.equal(clock.nextDelayMs(), 1000);
  server.failWith(undefined);
  clock.advanceToNext();
  await server.waitFor(() => server.events().length === 1, 'the event');
  assert.equal(server.requests.filter((r) => r.status === 503).length, 2);
  assert.equal(reporter.stats().retries, 2);
});

test('queue overflow drops the oldest with a diagnostic; a rejected event is not retried', async (t) => {
  const drops = collect(t, 'imgstream:k8s-events:drop');
  const { server, clock, reporter } = await setup(t, { maxQueuedEvents: 2, lookupNodeUid: false }, { startDown: true });
  for (let i = 1; i <= 5; i++) reporter.imageStreaming({ image: `registry.local/app-${i}:1` });
  await clock.waitForTimer();
  await server.up();
  clock.advanceToNext();
  await server.waitFor(() => server.events().length === 2, 'the two newest');
  assert.deepEqual(
    server.events().map((e) => e.message),
    ['Image registry.local/app-4:1 is backed by image streaming.', 'Image registry.local/app-5:1 is backed by image streaming.'],
  );
  const queueFull = drops.filter((d) => (d as { why: string }).why === 'queue-full') as Array<{ message: string }>;
  assert.deepEqual(queueFull.map((d) => d.message.split(' ')[1]), ['registry.local/app-1:1', 'registry.local/app-2:1', 'registry.local/app-3:1']);

  // invalid input and use after close are dropped, never thrown
  reporter.layerFallback({ image: '' } as never);
  reporter.layerFallback({ image: 'x', reason: 'bogus' } as never);
  assert.equal(drops.filter((d) => (d as { why: string }).why === 'invalid-input').length, 2);
  await reporter.close();
  reporter.imageStreaming({ image: 'registry.local/late:1' });
  assert.equal(drops.filter((d) => (d as { why: string }).why === 'closed').length, 1);
  assert.equal(reporter.stats().dropped, 6);
});

test('an event the API server rejects (403) is dropped, not retried', async (t) => {
  const drops = collect(t, 'imgstream:k8s-events:drop');
  const server = await startKubeApiServer(t);
  const client = await loadKubeClient({ kubeconfigPath: server.kubeconfigPath });
  const clock = new ManualClock();
  // a client whose create is refused like an RBAC denial: wrap the real one
  const reporter = new EventReporter({
    client: {
      ...client,
      readNode: (n, o) => client.readNode(n, o),
      patchEvent: (...a) => client.patchEvent(...a),
      patchNodeLabels: (...a) => client.patchNodeLabels(...a),
      createEvent: async () => {
        throw new ImgstreamError(ErrorCode.KUBERNETES_API, 'forbidden', { status: 403, retryable: false });
      },
    },
    nodeName: 'node-a',
    clock,
  });
  t.after(() => reporter.destroy());
  reporter.imageStreaming({ image: 'registry.local/x:1' });
  await new Promise<void>((resolve) => {
    const check = (): void => (drops.length > 0 ? resolve() : void setImmediate(check));
    check();
  });
  assert.equal((drops[0] as { why: string }).why, 'rejected');
  assert.equal(clock.pending, 0, 'no retry scheduled');
  assert.equal(reporter.stats().retries, 0);
});

test('close() flushes queued events, and gives up after closeTimeoutMs when the server stays down', async (t) => {
  const { server, clock, reporter } = await setup(t, { lookupNodeUid: false, closeTimeoutMs: 3000 });
  for (let i = 0; i < 3; i++) reporter.imageStreaming({ image: `registry.local/app-${i}:1` });
  await reporter.close();
  assert.equal(server.events().length, 3, 'flushed before close resolved');
  await reporter.close(); // idempotent

  const down = await setup(t, { lookupNodeUid: false, closeTimeoutMs: 3000 }, { startDown: true });
  down.reporter.imageStreaming({ image: 'registry.local/never:1' });
  await down.clock.waitForTimer();
  const closing = down.reporter.close();
  let closed = false;
  void closing.then(() => (closed = true));
  down.clock.advance(2999);
  await new Promise((r) => setImmediate(r));
  assert.equal(closed, false);
  down.clock.advance(1);
  await closing;
  assert.equal(down.reporter.stats().dropped, 1);
  assert.equal(down.reporter.stats().queued, 0);
  assert.equal(down.clock.pending, 0, 'no timers left behind');
  void clock;
});

test('when the Node cannot be read (404), events are written without its UID', async (t) => {
  const { server, reporter } = await setup(t, { nodeName: 'node-unknown' });
  reporter.imageStreaming({ image: 'registry.local/x:1', layers: -1 } as never); // invalid: dropped
  reporter.imageStreaming({ image: 'registry.local/x:1', layers: 2 });
  await reporter.close();
  assert.deepEqual(server.requests.map((r) => `${r.method} ${r.status}`), ['GET 404', 'POST 201']);
  assert.deepEqual(server.events()[0]!.involvedObject, { apiVersion: 'v1', kind: 'Node', name: 'node-unknown' });
  assert.equal(reporter.stats().dropped, 1);
});

test('bad options throw IMGSTREAM_INVALID_OPTION naming the option', async (t) => {
  const server = await startKubeApiServer(t);
  const client = await loadKubeClient({ kubeconfigPath: server.kubeconfigPath });
  const cases: Array<[Partial<EventReporterOptions>, string]> = [
    [{ nodeName: 'Node_A' }, 'nodeName'],
    [{ namespace: 'a/b' }, 'namespace'],
    [{ eventsPerSecond: 0 }, 'eventsPerSecond'],
    [{ eventBurst: 0.5 }, 'eventBurst'],
    [{ maxQueuedEvents: 0 }, 'maxQueuedEvents'],
    [{ retryInitialDelayMs: 1000, retryMaxDelayMs: 10 }, 'retryMaxDelayMs'],
  ];
  for (const [bad, option] of cases) {
    assert.throws(
      () => new EventReporter({ client, nodeName: 'node-a', ...bad }),
      (err: unknown) => err instanceof ImgstreamError && err.code === ErrorCode.INVALID_OPTION && err.fields.option === option,
      option,
    );
  }
});
