import { sha256Digest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { RegistryClient } from '../registry/client.js';
import { withDigest, type ImageReference } from '../registry/reference.js';
import { PREFETCH_PACK_MEDIA_TYPE } from './prefetch-pack.js';
import { PREFETCH_ARTIFACT_TYPE, PREFETCH_REPORT_MEDIA_TYPE, parsePrefetchReport, serialisePrefetchReport, type PrefetchReport } from './prefetch-report.js';

const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256Digest('{}'), size: 2 } as const;
const MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';
const CREATED = 'org.opencontainers.image.created';

/** The artifact manifest of a report, and its blobs. */
export interface PrefetchArtifact {
  readonly manifest: Uint8Array;
  readonly digest: Digest;
  readonly blobs: ReadonlyArray<{ mediaType: string; bytes: Uint8Array }>;
}

/**
 * Builds the OCI 1.1 artifact carrying a prefetch report: artifactType {@link PREFETCH_ARTIFACT_TYPE},
 * the empty config, the serialised report as the first blob, the report's pack (when it names one)
 * as the second ({@link PREFETCH_PACK_MEDIA_TYPE}), and `subject` = the image manifest.
 */
export function buildPrefetchArtifact(subject: { mediaType: string; digest: Digest; size: number }, report: PrefetchReport, pack?: Uint8Array): PrefetchArtifact {
  if (subject.digest !== report.manifestDigest) {
    throw new ImgstreamError(ErrorCode.INVALID_PREFETCH_REPORT, `prefetch report of ${report.manifestDigest} cannot refer to ${subject.digest}`, { digest: subject.digest });
  }
  if (pack !== undefined && (report.pack === undefined || sha256Digest(pack) !== report.pack.digest)) {
    throw new ImgstreamError(ErrorCode.INVALID_PREFETCH_REPORT, 'the pack is not the one the prefetch report names', { digest: subject.digest });
  }
  const bytes = serialisePrefetchReport(report);
  const packLayer = pack !== undefined ? [{ mediaType: PREFETCH_PACK_MEDIA_TYPE, digest: sha256Digest(pack), size: pack.byteLength }] : [];
  const json = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: PREFETCH_ARTIFACT_TYPE,
    config: EMPTY_CONFIG,
    layers: [{ mediaType: PREFETCH_REPORT_MEDIA_TYPE, digest: sha256Digest(bytes), size: bytes.byteLength }, ...packLayer],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { [CREATED]: report.createdAt },
  };
  const manifest = new TextEncoder().encode(JSON.stringify(json));
  return {
    manifest,
    digest: sha256Digest(manifest),
    blobs: [
      { mediaType: EMPTY_CONFIG.mediaType, bytes: new TextEncoder().encode('{}') },
      { mediaType: PREFETCH_REPORT_MEDIA_TYPE, bytes },
      ...(pack !== undefined ? [{ mediaType: PREFETCH_PACK_MEDIA_TYPE, bytes: pack }] : []),
    ],
  };
}

/**
 * Pushes a report to the image's repository as an artifact referring to its manifest (referrers
 * API, or the `sha256-<hex>` tag schema fallback the client maintains). Needs push rights.
 * Resolves with the artifact manifest digest.
 */
export async function pushPrefetchReport(client: RegistryClient, ref: ImageReference, report: PrefetchReport, options: { signal?: AbortSignal; pack?: Uint8Array } = {}): Promise<Digest> {
  const call = options.signal !== undefined ? { signal: options.signal } : {};
  const image = await client.resolveImage(withDigest(ref, report.manifestDigest), call);
  const artifact = buildPrefetchArtifact({ mediaType: image.mediaType, digest: image.digest, size: image.manifestBytes.byteLength }, report, options.pack);
  for (const b of artifact.blobs) await client.pushBlob(ref, b.bytes, { ...call, mediaType: b.mediaType });
  await client.pushManifest(ref, artifact.manifest, { ...call, tag: artifact.digest, mediaType: MANIFEST_MEDIA_TYPE });
  return artifact.digest;
}

/**
 * The newest prefetch report artifact referring to `manifestDigest` (by its created annotation),
 * parsed; undefined when there is none. Throws IMGSTREAM_INVALID_PREFETCH_REPORT when the newest
 * one is malformed.
 */
export async function fetchPrefetchReport(client: RegistryClient, ref: ImageReference, manifestDigest: Digest, options: { signal?: AbortSignal } = {}): Promise<PrefetchReport | undefined> {
  const call = options.signal !== undefined ? { signal: options.signal } : {};
  const found = await client.referrers(ref, manifestDigest, { ...call, artifactType: PREFETCH_ARTIFACT_TYPE });
  const newest = [...found].sort((a, b) => (a.annotations?.[CREATED] ?? '').localeCompare(b.annotations?.[CREATED] ?? '')).at(-1);
  if (newest === undefined) return undefined;
  const m = await client.getManifest(withDigest(ref, newest.digest), { ...call, digest: newest.digest });
  if (m.document.kind !== 'manifest') throw new ImgstreamError(ErrorCode.INVALID_PREFETCH_REPORT, `prefetch artifact ${newest.digest} is not a manifest`, { digest: manifestDigest });
  const doc = m.document.manifest;
  const layer = doc.layers[0];
  const packLayer = doc.layers[1];
  if (
    doc.artifactType !== PREFETCH_ARTIFACT_TYPE ||
    doc.subject?.digest !== manifestDigest ||
    doc.layers.length > 2 ||
    layer?.mediaType !== PREFETCH_REPORT_MEDIA_TYPE ||
    (packLayer !== undefined && packLayer.mediaType !== PREFETCH_PACK_MEDIA_TYPE)
  ) {
    throw new ImgstreamError(ErrorCode.INVALID_PREFETCH_REPORT, `prefetch artifact ${newest.digest} is malformed`, { digest: manifestDigest });
  }
  const bytes = await client.fetchBlob(ref, { digest: layer.digest, size: layer.size }, call);
  const report = parsePrefetchReport(new Uint8Array(bytes));
  // the report's pack is the artifact's second blob (fetched by the replay); without it, none
  if (report.pack === undefined || (packLayer?.digest === report.pack.digest && packLayer.size === report.pack.size)) return report;
  const { pack: _unavailable, ...withoutPack } = report;
  return withoutPack;
}
