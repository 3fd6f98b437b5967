import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, INDEX_ARTIFACT_TYPE, INDEX_MEDIA_TYPE, buildIndexArtifact, isImgstreamError, parseIndexArtifact, referrersFallbackTag, sha256Digest } from '@imgstream/core';

test('index artifact: OCI 1.1 manifest with subject, empty config and one blob per layer index; parses back', () => {
  const subject = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256Digest('manifest'), size: 8 };
  const a = buildIndexArtifact(subject, [
    { layerDigest: sha256Digest('layer-b'), format: 'zran', bytes: new Uint8Array([1, 2, 3]) },
    { layerDigest: sha256Digest('layer-a'), format: 'raw', bytes: new Uint8Array([4, 5]) },
  ]);
  const m = JSON.parse(Buffer.from(a.manifest).toString()) as Record<string, unknown> & { layers: Array<{ mediaType: string }>; subject: unknown; config: { digest: string } };
  assert.equal(m.artifactType, INDEX_ARTIFACT_TYPE);
  assert.deepEqual(m.subject, subject);
  assert.equal(m.config.digest, 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a');
  assert.ok(m.layers.every((l) => l.mediaType === INDEX_MEDIA_TYPE));
  assert.equal(a.manifestDescriptor.digest, sha256Digest(a.manifest));
  assert.equal(a.blobs.length, 3);
  for (const b of a.blobs) assert.equal(b.descriptor.digest, sha256Digest(b.bytes));
  // deterministic: same input, same manifest digest (indexing is idempotent)
  assert.equal(buildIndexArtifact(subject, [...[{ layerDigest: sha256Digest('layer-a'), format: 'raw' as const, bytes: new Uint8Array([4, 5]) }], { layerDigest: sha256Digest('layer-b'), format: 'zran', bytes: new Uint8Array([1, 2, 3]) }]).manifestDescriptor.digest, a.manifestDescriptor.digest);
  const parsed = parseIndexArtifact(a.manifest, subject.digest);
  assert.equal(parsed.get(sha256Digest('layer-b'))?.format, 'zran');
  assert.equal(parsed.get(sha256Digest('layer-a'))?.digest, sha256Digest(new Uint8Array([4, 5])));
  assert.equal(referrersFallbackTag(subject.digest), `sha256-${subject.digest.slice(7)}`);
  const invalid = (e: unknown) => isImgstreamError(e, ErrorCode.INVALID_MANIFEST);
  assert.throws(() => parseIndexArtifact(a.manifest, sha256Digest('other')), invalid);
  assert.throws(() => parseIndexArtifact(new TextEncoder().encode('{"schemaVersion":2}')), invalid);
  assert.throws(() => parseIndexArtifact(new TextEncoder().encode('nope')), invalid);
});
