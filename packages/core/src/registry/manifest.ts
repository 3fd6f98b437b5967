import { isDigest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MediaType } from './media-types.js';
import { platformScore, formatPlatform, type Platform } from './platform.js';

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: Digest;
  /** Size of the content in bytes. */
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
  /** Base64 of the content, when embedded. */
  data?: string;
}

/** An OCI image manifest or Docker schema 2 manifest. */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** An OCI image index or Docker manifest list. */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** A parsed manifest document: a single-image manifest or an index. */
export type ManifestDocument = { kind: 'manifest'; manifest: ImageManifest } | { kind: 'index'; index: ImageIndex };

function bad(what: string, message: string, digest?: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.INVALID_MANIFEST, `${what}: ${message}`, digest !== undefined ? { digest } : {});
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkStringMap(v: unknown, where: string, what: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!isRecord(v)) throw bad(what, `${where} must be an object of strings`);
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw bad(what, `${where}[${JSON.stringify(k)}] must be a string`);
  }
  return v as Record<string, string>;
}

const MEDIA_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

/** Validates a descriptor object; throws IMGSTREAM_INVALID_MANIFEST naming `where`. */
export function parseDescriptor(v: unknown, where: string, what = 'manifest'): Descriptor {
  if (!isRecord(v)) throw bad(what, `${where} must be an object`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== 'string' || !MEDIA_TYPE_RE.test(mediaType)) throw bad(what, `${where}.mediaType is missing or malformed`);
  if (!isDigest(digest)) throw bad(what, `${where}.digest is missing, malformed or not sha256: ${JSON.stringify(digest)?.slice(0, 100)}`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw bad(what, `${where}.size must be a non-negative integer`);
  const d: Descriptor = { mediaType, digest, size };
  if (v.urls !== undefined) {
    if (!Array.isArray(v.urls) || v.urls.some((u) => typeof u !== 'string')) throw bad(what, `${where}.urls must be an array of strings`);
    d.urls = v.urls as string[];
  }
  const annotations = checkStringMap(v.annotations, `${where}.annotations`, what);
  if (annotations) d.annotations = annotations;
  if (v.artifactType !== undefined) {
    if (typeof v.artifactType !== 'string' || !MEDIA_TYPE_RE.test(v.artifactType)) throw bad(what, `${where}.artifactType is malformed`);
    d.artifactType = v.artifactType;
  }
  if (v.data !== undefined) {
    if (typeof v.data !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v.data)) throw bad(what, `${where}.data must be base64`);
    d.data = v.data;
  }
  if (v.platform !== undefined) d.platform = parsePlatformObject(v.platform, `${where}.platform`, what);
  return d;
}

function parsePlatformObject(v: unknown, where: string, what: string): Platform {
  if (!isRecord(v)) throw bad(what, `${where} must be an object`);
  const { os, architecture, variant } = v;
  if (typeof os !== 'string' || os === '') throw bad(what, `${where}.os must be a non-empty string`);
  if (typeof architecture !== 'string' || architecture === '') throw bad(what, `${where}.architecture must be a non-empty string`);
  const p: Platform = { os, architecture };
  if (variant !== undefined) {
    if (typeof variant !== 'string') throw bad(what, `${where}.variant must be a string`);
    if (variant !== '') p.variant = variant;
  }
  const osVersion = v['os.version'];
  if (osVersion !== undefined) {
    if (typeof osVersion !== 'string') throw bad(what, `${where}["os.version"] must be a string`);
    p['os.version'] = osVersion;
  }
  const osFeatures = v['os.features'];
  if (osFeatures !== undefined) {
    if (!Array.isArray(osFeatures) || osFeatures.some((f) => typeof f !== 'string')) throw bad(what, `${where}["os.features"] must be an array of strings`);
    p['os.features'] = osFeatures as string[];
  }
  return p;
}

function isSchema1Type(t: string | undefined): boolean {
  return t === MediaType.DOCKER_SCHEMA1_MANIFEST || t === MediaType.DOCKER_SCHEMA1_SIGNED_MANIFEST;
}

/**
 * Parses and strictly validates a manifest or index. `contentType` is the HTTP `Content-Type`
 * (may be undefined); it must agree with the document's own `mediaType`. Docker schema 1 is
 * refused with IMGSTREAM_UNSUPPORTED_SCHEMA1; anything else malformed is IMGSTREAM_INVALID_MANIFEST.
 */
export function parseManifest(bytes: Uint8Array, contentType?: string, digest?: string): ManifestDocument {
  const what = `manifest${digest ? ` ${digest}` : ''}`;
  const ct = contentType?.split(';')[0]?.trim().toLowerCase() || undefined;
  if (isSchema1Type(ct)) throw schema1(digest);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new ImgstreamError(ErrorCode.INVALID_MANIFEST, `${what}: not valid JSON (${(err as Error).message})`, { cause: err, ...(digest ? { digest } : {}) });
  }
  if (!isRecord(json)) throw bad(what, 'must be a JSON object', digest);
  if (json.schemaVersion === 1) throw schema1(digest);
  if (json.schemaVersion !== 2) throw bad(what, `unsupported schemaVersion ${JSON.stringify(json.schemaVersion)}`, digest);
  const declared = json.mediaType;
  if (declared !== undefined && typeof declared !== 'string') throw bad(what, 'mediaType must be a string', digest);
  if (declared !== undefined && isSchema1Type(declared)) throw schema1(digest);
  const known = [...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES];
  let mediaType = declared;
  if (mediaType === undefined) {
    // OCI allows omitting mediaType; use the Content-Type or the shape of the document.
    if (ct !== undefined && known.includes(ct)) mediaType = ct;
    else if (json.manifests !== undefined && json.config === undefined) mediaType = MediaType.OCI_INDEX;
    else if (json.config !== undefined && json.manifests === undefined) mediaType = MediaType.OCI_MANIFEST;
    else throw bad(what, 'cannot tell a manifest from an index (no mediaType)', digest);
  } else if (ct !== undefined && known.includes(ct) && ct !== mediaType) {
    throw bad(what, `Content-Type ${ct} disagrees with the document's mediaType ${mediaType}`, digest);
  }
  if (!known.includes(mediaType)) {
    throw new ImgstreamError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, `${what}: unsupported media type ${JSON.stringify(mediaType)}`, {
      ...(digest ? { digest } : {}),
    });
  }
  const annotations = checkStringMap(json.annotations, 'annotations', what);
  let artifactType: string | undefined;
  if (json.artifactType !== undefined) {
    if (typeof json.artifactType !== 'string' || !MEDIA_TYPE_RE.test(json.artifactType)) throw bad(what, 'artifactType is malformed', digest);
    artifactType = json.artifactType;
  }
  const subject = json.subject === undefined ? undefined : parseDescriptor(json.subject, 'subject', what);

  if (MANIFEST_MEDIA_TYPES.includes(mediaType)) {
    if (json.manifests !== undefined) throw bad(what, 'a manifest must not have "manifests"', digest);
    const config = parseDescriptor(json.config, 'config', what);
    if (!Array.isArray(json.layers)) throw bad(what, 'layers must be an array', digest);
    const layers = json.layers.map((l, i) => parseDescriptor(l, `layers[${i}]`, what));
    if (mediaType === MediaType.DOCKER_MANIFEST && layers.length === 0) throw bad(what, 'a Docker image manifest needs at least one layer', digest);
    const manifest: ImageManifest = { schemaVersion: 2, mediaType, config, layers };
    if (artifactType !== undefined) manifest.artifactType = artifactType;
    if (subject) manifest.subject = subject;
    if (annotations) manifest.annotations = annotations;
    return { kind: 'manifest', manifest };
  }
  if (json.config !== undefined || json.layers !== undefined) throw bad(what, 'an index must not have "config" or "layers"', digest);
  if (!Array.isArray(json.manifests)) throw bad(what, 'manifests must be an array', digest);
  const manifests = json.manifests.map((m, i) => parseDescriptor(m, `manifests[${i}]`, what));
  const index: ImageIndex = { schemaVersion: 2, mediaType, manifests };
  if (artifactType !== undefined) index.artifactType = artifactType;
  if (subject) index.subject = subject;
  if (annotations) index.annotations = annotations;
  return { kind: 'index', index };
}

function schema1(digest?: string): ImgstreamError {
  return new ImgstreamError(
    ErrorCode.UNSUPPORTED_SCHEMA1,
    'the image uses the deprecated Docker schema 1 manifest format, which imgstream refuses; re-push it with a current client (schema 2 or OCI)',
    digest ? { digest } : {},
  );
}

/**
 * Picks the index entry that best matches `wanted` (see platformScore); the first of equally good
 * entries wins. Throws IMGSTREAM_PLATFORM_NOT_FOUND listing the platforms the index offers.
 */
export function selectPlatform(index: ImageIndex, wanted: Platform, ref?: string): Descriptor {
  let best: Descriptor | undefined;
  let bestScore = -1;
  for (const m of index.manifests) {
    if (m.platform === undefined) continue;
    if (!MANIFEST_MEDIA_TYPES.includes(m.mediaType) && !INDEX_MEDIA_TYPES.includes(m.mediaType)) continue;
    const s = platformScore(m.platform, wanted);
    if (s > bestScore) {
      best = m;
      bestScore = s;
    }
  }
  if (best === undefined) {
    const offered = index.manifests.filter((m) => m.platform).map((m) => formatPlatform(m.platform as Platform));
    throw new ImgstreamError(
      ErrorCode.PLATFORM_NOT_FOUND,
      `no manifest for platform ${formatPlatform(wanted)}${ref ? ` in ${ref}` : ''}; the index offers: ${offered.join(', ') || 'none'}`,
      { ...(ref ? { ref } : {}), platform: formatPlatform(wanted), offered },
    );
  }
  return best;
}
