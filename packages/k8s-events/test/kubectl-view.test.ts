import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '@imgstream/core';
import { EventReporter, loadKubeClient } from '@imgstream/k8s-events';
import { startKubeApiServer } from '../../../test/helpers/kube-api-server.ts';
import { kubectlDescribeEvents, kubectlGetEvents } from '../../../test/helpers/kubectl-events.ts';
import { ManualClock } from '../../../test/helpers/manual-clock.ts';

// The scenario docs/k8s-events.md shows: what an operator sees on a node after ten minutes of pulls.
test('what `kubectl get events` shows after ten minutes of pulls on a node', async (t) => {
  const server = await startKubeApiServer(t, { nodes: [{ name: 'gke-pool-1-a1b2', uid: '5f0c1a7e-7d7b-4b8e-9d7e-1f0e2d3c4b5a' }] });
  const client = await loadKubeClient({ kubeconfigPath: server.kubeconfigPath });
  const clock = new ManualClock();
  const start = clock.now();
  const reporter = new EventReporter({ client, nodeName: 'gke-pool-1-a1b2', clock });
  t.after(() => reporter.destroy());
  const layer = (c: string): string => `sha256:${c.repeat(64)}`;

  reporter.imageStreaming({ image: 'docker.io/library/nginx:1.27', manifestDigest: `sha256:9b1c2d3e4f5a${'0'.repeat(52)}`, layers: 7 });
  clock.advance(60_000);
  for (let i = 0; i < 3; i++) {
    reporter.layerFallback({ image: 'registry.example.com/team/api:2.4.1', layerDigest: layer('7'), code: ErrorCode.NOT_STREAMABLE });
    await server.waitFor(() => server.events().length === 2 && (server.events()[1]?.count ?? 0) === i + 1, `no-index x${i + 1}`);
    clock.advance(150_000);
  }
  reporter.imageStreaming({ image: 'registry.example.com/team/api:2.4.1', layers: 4 });
  reporter.layerFallback({ image: 'registry.example.com/legacy/tool:0.9', reason: 'schema1' });
  reporter.layerFallback({ image: 'registry.example.com/private/db:16', reason: 'registry-auth', code: ErrorCode.REGISTRY_DENIED });
  reporter.layerFallback({ image: 'ghcr.io/acme/ml:3', layerDigest: layer('e'), reason: 'unsupported-media-type', detail: 'application/vnd.oci.image.layer.v1.tar+zstd' });
  reporter.layerFallback({ image: 'registry.example.com/team/web:5', layerDigest: layer('c'), code: ErrorCode.REGISTRY_UNAVAILABLE });
  await reporter.close();
  clock.advance(90_000);
  assert.equal(clock.now() - start, 10 * 60_000);

  assert.deepEqual(server.violations, []);
  const get = kubectlGetEvents(server.events(), clock.now());
  const describe = kubectlDescribeEvents(server.events(), clock.now());
  console.log(`$ kubectl get events --field-selector involvedObject.kind=Node\n${get}\n\n$ kubectl describe node gke-pool-1-a1b2\n...\n${describe}`);
  const lines = get.split('\n');
  assert.equal(lines.length, 8);
  assert.match(lines[0]!, /^LAST SEEN\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE$/);
  assert.match(lines[1]!, /^10m\s+Normal\s+ImageStreaming\s+node\/gke-pool-1-a1b2\s+Image docker\.io\/library\/nginx:1\.27 is backed by image streaming \(manifest sha256:9b1c2d3e4f5a, 7 layers streamed\)\.$/);
  assert.match(lines[2]!, /^4m \(x3 over 9m\)\s+Warning\s+StreamingFallbackNoIndex\s+node\/gke-pool-1-a1b2\s+Layer sha256:7{64} of image registry\.example\.com\/team\/api:2\.4\.1 is pulled in full: it has no seekable index .*\[IMGSTREAM_NOT_STREAMABLE\]\.$/);
  for (const reason of ['StreamingFallbackSchema1', 'StreamingFallbackAuth', 'StreamingFallbackMediaType', 'StreamingFallbackFetchFailed']) {
    assert.match(get, new RegExp(`\\n\\d+s\\s+Warning\\s+${reason}\\s+node/gke-pool-1-a1b2\\s+`), reason);
  }
  assert.match(describe, /Normal\s+ImageStreaming\s+10m\s+imgstreamd\s+Image docker\.io/);
});
