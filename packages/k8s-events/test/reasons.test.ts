import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '@imgstream/core';
import { EventReason, FALLBACK_REASONS, FALLBACK_TABLE, eventReasonFor, fallbackReasonForCode } from '@imgstream/k8s-events';

test('every fallback cause has its own Warning reason, distinct from ImageStreaming', () => {
  assert.deepEqual([...FALLBACK_REASONS], ['no-index', 'unsupported-media-type', 'schema1', 'registry-auth', 'fetch-failed', 'other']);
  const reasons = FALLBACK_REASONS.map((r) => eventReasonFor({ reason: r }));
  assert.equal(new Set([...reasons, EventReason.IMAGE_STREAMING]).size, FALLBACK_REASONS.length + 1);
  for (const r of reasons) assert.match(r, /^StreamingFallback[A-Z][A-Za-z0-9]*$/);
});

test('ImgstreamError codes map through the same table', () => {
  const expected: Array<[string, string]> = [
    [ErrorCode.NOT_STREAMABLE, 'StreamingFallbackNoIndex'],
    [ErrorCode.INVALID_INDEX, 'StreamingFallbackNoIndex'],
    [ErrorCode.UNSUPPORTED_MEDIA_TYPE, 'StreamingFallbackMediaType'],
    [ErrorCode.UNSUPPORTED_SCHEMA1, 'StreamingFallbackSchema1'],
    [ErrorCode.REGISTRY_UNAUTHORIZED, 'StreamingFallbackAuth'],
    [ErrorCode.REGISTRY_DENIED, 'StreamingFallbackAuth'],
    [ErrorCode.CREDENTIAL_HELPER, 'StreamingFallbackAuth'],
    [ErrorCode.REGISTRY_UNAVAILABLE, 'StreamingFallbackFetchFailed'],
    [ErrorCode.TIMEOUT, 'StreamingFallbackFetchFailed'],
    [ErrorCode.DIGEST_MISMATCH, 'StreamingFallbackError'],
    ['IMGSTREAM_SOMETHING_NEW', 'StreamingFallbackError'],
  ];
  for (const [code, reason] of expected) assert.equal(eventReasonFor({ code }), reason, code);
  // each code appears in at most one row, and the row's reason is what the code maps to
  const seen = new Set<string>();
  for (const r of FALLBACK_REASONS) {
    for (const code of FALLBACK_TABLE[r].codes) {
      assert.ok(!seen.has(code), `${code} listed twice`);
      seen.add(code);
      assert.equal(fallbackReasonForCode(code), r);
    }
  }
});
