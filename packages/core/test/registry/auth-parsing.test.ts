import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelayMs, parseRetryAfterMs, parseWwwAuthenticate } from '@imgstream/core';

test('parseWwwAuthenticate parses Bearer and Basic challenges', () => {
  assert.deepEqual(parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull"'), [
    { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/ubuntu:pull' } },
  ]);
  assert.deepEqual(parseWwwAuthenticate('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  assert.deepEqual(parseWwwAuthenticate('Basic realm="a", Bearer realm="b", service=svc, error="insufficient_scope"'), [
    { scheme: 'basic', params: { realm: 'a' } },
    { scheme: 'bearer', params: { realm: 'b', service: 'svc', error: 'insufficient_scope' } },
  ]);
  assert.deepEqual(parseWwwAuthenticate('Bearer realm="with \\"quote\\" and, comma",scope="repository:a:pull,push"'), [
    { scheme: 'bearer', params: { realm: 'with "quote" and, comma', scope: 'repository:a:pull,push' } },
  ]);
  assert.deepEqual(parseWwwAuthenticate(['Basic realm=x', 'Bearer realm=y']).map((c) => c.scheme), ['basic', 'bearer']);
  assert.deepEqual(parseWwwAuthenticate(undefined), []);
  assert.deepEqual(parseWwwAuthenticate('Bearer realm="unterminated'), [{ scheme: 'bearer', params: {} }]);
});

test('parseRetryAfterMs reads seconds and HTTP dates, capped', () => {
  assert.equal(parseRetryAfterMs('2', 10_000), 2000);
  assert.equal(parseRetryAfterMs('120', 10_000), 10_000);
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(parseRetryAfterMs('Thu, 01 Jan 2026 00:00:03 GMT', 10_000, now), 3000);
  assert.equal(parseRetryAfterMs('Wed, 31 Dec 2025 00:00:00 GMT', 10_000, now), 0);
  assert.equal(parseRetryAfterMs('soon', 10_000), undefined);
  assert.equal(parseRetryAfterMs(undefined, 10_000), undefined);
});

test('backoffDelayMs grows exponentially with jitter in [d/2, d] and is capped', () => {
  assert.equal(backoffDelayMs(0, 100, 5000, () => 0), 50);
  assert.equal(backoffDelayMs(0, 100, 5000, () => 1), 100);
  assert.equal(backoffDelayMs(3, 100, 5000, () => 1), 800);
  assert.equal(backoffDelayMs(20, 100, 5000, () => 1), 5000);
  for (let i = 0; i < 100; i++) {
    const v = backoffDelayMs(2, 100, 5000);
    assert.ok(v >= 200 && v <= 400, String(v));
  }
});
