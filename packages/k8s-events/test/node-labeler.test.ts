import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, ImgstreamError } from '@imgstream/core';
import { K8S_EVENTS_DEFAULTS, NodeLabeler, loadKubeClient } from '@imgstream/k8s-events';
import { startKubeApiServer } from '../../../test/helpers/kube-api-server.ts';
import { ManualClock } from '../../../test/helpers/manual-clock.ts';

const LABEL = 'imgstream.dev/image-streaming';

test('start() labels the node with a strategic-merge patch; close() removes only that label', async (t) => {
  const server = await startKubeApiServer(t, { nodes: [{ name: 'node-a', uid: 'uid-a', labels: { 'topology.kubernetes.io/zone': 'z1' } }] });
  const client = await loadKubeClient({ kubeconfigPath: server.kubeconfigPath });
  const labeler = new NodeLabeler({ client, nodeName: 'node-a', removeOnClose: true });
  assert.equal(labeler.labelName, LABEL);
  assert.equal(K8S_EVENTS_DEFAULTS.nodeLabelName, LABEL);

  const node = await labeler.start();
  assert.equal(node.uid, 'uid-a');
  assert.equal(node.labels[LABEL], 'true');
  assert.equal(await labeler.start(), node, 'idempotent: one patch');
  assert.deepEqual(server.node('node-a')!.metadata!.labels, {
    'kubernetes.io/hostname': 'node-a',
    'topology.kubernetes.io/zone': 'z1',
    [LABEL]: 'true',
  });

  await labeler.close();
  await labeler.close();
  assert.deepEqual(server.node('node-a')!.metadata!.labels, { 'kubernetes.io/hostname': 'node-a', 'topology.kubernetes.io/zone': 'z1' });

  assert.deepEqual(
    server.requests.map((r) => [r.method, r.path, r.contentType, r.body, r.status]),
    [
      ['PATCH', '/api/v1/nodes/node-a', 'application/strategic-merge-patch+json', { metadata: { labels: { [LABEL]: 'true' } } }, 200],
      ['PATCH', '/api/v1/nodes/node-a', 'application/strategic-merge-patch+json', { metadata: { labels: { [LABEL]: null } } }, 200],
    ],
  );
  assert.deepEqual(server.violations, []);
  await assert.rejects(labeler.start(), (err: unknown) => err instanceof ImgstreamError && err.code === ErrorCode.CLOSED);
});

test('a configurable label stays on the node after close() unless removal was asked for', async (t) => {
  const server = await startKubeApiServer(t);
  const client = await loadKubeClient({ kubeconfigPath: server.kubeconfigPath });
  const labeler = new NodeLabeler({ client, nodeName: 'node-a', labelName: 'example.com/lazy-pull', labelValue: 'imgstream' });
  await labeler.start();
  await labeler.close();
  assert.equal(server.node('node-a')!.metadata!.labels!['example.com/lazy-pull'], 'imgstream');
  assert.equal(server.requests.length, 1);
});

test('start() retries while the API server is unreachable, and rejects with a code on a 404', async (t) => {
  const server = await startKubeApiServer(t, { startDown: true });
  const client = await loadKubeClient({ kubeconfigPath: server.kubeconfigPath });
  const clock = new ManualClock();
  const labeler = new NodeLabeler({ client, nodeName: 'node-a', clock, retryJitter: 0 });
  const started = labeler.start();
  await clock.waitForTimer();
  assert.equal(clock.advanceToNext(), 500);
  await clock.waitForTimer();
  await server.up();
  assert.equal(clock.advanceToNext(), 1000);
  const node = await started;
  assert.equal(node.labels[LABEL], 'true');

  const missing = new NodeLabeler({ client, nodeName: 'node-b', clock });
  await assert.rejects(missing.start(), (err: unknown) => err instanceof ImgstreamError && err.code === ErrorCode.KUBERNETES_API && err.fields.status === 404 && err.fields.retryable === false);
  assert.equal(clock.pending, 0, 'a 404 is not retried');

  const aborted = new NodeLabeler({ client, nodeName: 'node-a', clock });
  const reason = new Error('shutting down');
  await assert.rejects(aborted.start({ signal: AbortSignal.abort(reason) }), (err) => err === reason);
});

test('bad label options throw IMGSTREAM_INVALID_OPTION', async (t) => {
  const server = await startKubeApiServer(t);
  const client = await loadKubeClient({ kubeconfigPath: server.kubeconfigPath });
  for (const [bad, option] of [
    [{ labelName: 'bad prefix!/x' }, 'labelName'],
    [{ labelName: 'imgstream.dev/' }, 'labelName'],
    [{ labelValue: 'x'.repeat(64) }, 'labelValue'],
    [{ nodeName: '' }, 'nodeName'],
  ] as const) {
    assert.throws(
      () => new NodeLabeler({ client, nodeName: 'node-a', ...bad }),
      (err: unknown) => err instanceof ImgstreamError && err.code === ErrorCode.INVALID_OPTION && err.fields.option === option,
    );
  }
});
