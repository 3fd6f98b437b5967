import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startRegistry } from '../helpers/registry.ts';

test('startRegistry runs a real docker-registry that answers /v2/ and stops cleanly', async (t) => {
  const reg = await startRegistry(t);
  const res = await fetch(`${reg.url}/v2/`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
  await res.arrayBuffer();
  await reg.stop();
  await assert.rejects(fetch(`${reg.url}/v2/`));
});
