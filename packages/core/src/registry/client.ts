import { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { abortable } from '../abortable.js';
import { defaults } from '../defaults.js';
import { channel, publish } from '../diagnostics.js';
import { Digester, digestHex, digestMismatch, parseDigest, sha256Digest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError, invalidOption } from '../errors.js';
import { Authenticator, type AuthEndpoint, type TokenHttpResult } from './auth.js';
import { RegistryBlobReader } from './blob-reader.js';
import { staticCredentials, type Credential, type CredentialProvider } from './credentials.js';
import { parseManifest, selectPlatform, type Descriptor, type ImageIndex, type ImageManifest, type ManifestDocument } from './manifest.js';
import { INDEX_MEDIA_TYPES, MANIFEST_ACCEPT, MediaType } from './media-types.js';
import { hostPlatform, normalizePlatform, type Platform } from './platform.js';
import { formatReference, isLoopbackHost, registryEndpointHost, withDigest, type ImageReference } from './reference.js';
import { backoffDelayMs, isRetryableNetworkError, parseRetryAfterMs, sleep, TruncatedBodyError, unavailable } from './retry.js';

const requestChannel = channel('core:registry-request');
const retryChannel = channel('core:registry-retry');
const mirrorChannel = channel('core:registry-mirror-fallback');
const blobLocationChannel = channel('core:registry-blob-location-dropped');

/** A mirror of a registry (containerd `hosts.toml` `[host."…"]` entry). */
export interface RegistryMirror {
  /** Base URL, e.g. `https://mirror.example.com` or `http://127.0.0.1:5000` (plain HTTP only when written so). */
  url: string;
  /** What the mirror may be used for; default `['pull', 'resolve']` (`resolve` = manifests by tag). */
  capabilities?: readonly ('pull' | 'resolve' | 'push')[];
  /** When true, `url` already is the API root (no `/v2` appended). Default false. */
  overridePath?: boolean;
}

/** Options of {@link RegistryClient}. */
export interface RegistryClientOptions {
  /** Credentials per registry host (`docker.io` for Docker Hub) or a provider (e.g. DockerConfigCredentials). Default: anonymous. */
  credentials?: CredentialProvider | Readonly<Record<string, Credential>>;
  /** Registry hosts (`host[:port]`) contacted over plain HTTP instead of HTTPS. Default none. */
  insecureRegistries?: readonly string[];
  /** Contact loopback registries (`localhost`, `127.0.0.0/8`, `::1`) over plain HTTP. Default false. */
  plainHttpLoopback?: boolean;
  /** Ordered mirrors per registry host, tried before the registry itself. Default none. */
  mirrors?: Readonly<Record<string, readonly RegistryMirror[]>>;
  /** A mirror that failed is skipped for this long, ms. Default {@link defaults}.registry.mirrorCooldownMs. */
  mirrorCooldownMs?: number;
  /** Extra trusted CA certificates (PEM) for HTTPS. Default: Node's bundled CAs. */
  ca?: string | Buffer | readonly (string | Buffer)[];
  /** Time to wait for the response headers of one request, ms. Default {@link defaults}.registry.requestTimeoutMs. */
  requestTimeoutMs?: number;
  /** Longest pause between two body chunks, ms. Default {@link defaults}.registry.bodyIdleTimeoutMs. */
  bodyIdleTimeoutMs?: number;
  /** TCP/TLS connect timeout, ms. Default {@link defaults}.registry.connectTimeoutMs. */
  connectTimeoutMs?: number;
  /** Retries after 5xx, 429, resets, timeouts and truncated bodies. Default {@link defaults}.registry.maxRetries. */
  maxRetries?: number;
  /** First backoff delay, ms (doubles each retry, with jitter). Default {@link defaults}.registry.retryBaseDelayMs. */
  retryBaseDelayMs?: number;
  /** Cap of one backoff delay, ms. Default {@link defaults}.registry.retryMaxDelayMs. */
  retryMaxDelayMs?: number;
  /** Cap of an honoured `Retry-After`, ms. Default {@link defaults}.registry.maxRetryAfterMs. */
  maxRetryAfterMs?: number;
  /** Redirects followed per request. Default {@link defaults}.registry.maxRedirects. */
  maxRedirects?: number;
  /**
   * How long a blob read's redirect target (the CDN or storage URL most registries send blob
   * downloads to) is reused for further reads of that blob, ms; 0 asks the registry every time.
   * Default {@link defaults}.registry.blobLocationTtlMs.
   */
  blobLocationTtlMs?: number;
  /** Largest manifest accepted, bytes. Default {@link defaults}.registry.maxManifestBytes. */
  maxManifestBytes?: number;
  /** Largest image config accepted, bytes. Default {@link defaults}.registry.maxConfigBytes. */
  maxConfigBytes?: number;
  /** Pooled connections per origin. Default {@link defaults}.registry.connectionsPerOrigin. */
  connectionsPerOrigin?: number;
  /** Idle keep-alive of pooled connections, ms. Default {@link defaults}.registry.keepAliveTimeoutMs. */
  keepAliveTimeoutMs?: number;
  /** Refresh tokens this long before expiry, ms. Default {@link defaults}.registry.tokenExpiryMarginMs. */
  tokenExpiryMarginMs?: number;
  /** `User-Agent` header. Default {@link defaults}.registry.userAgent. */
  userAgent?: string;
  /** Clock for token expiry, ms since the epoch. Default `Date.now`. */
  now?: () => number;
  /** Random source in [0, 1) for backoff jitter. Default `Math.random`. */
  random?: () => number;
}

/** Options of calls that wait. */
export interface CallOptions {
  signal?: AbortSignal;
}

/** A fetched, digest-checked manifest or index. */
export interface FetchedManifest {
  digest: Digest;
  mediaType: string;
  size: number;
  bytes: Uint8Array;
  document: ManifestDocument;
}

/** An image resolved to one platform's manifest and its verified config. */
export interface ResolvedImage {
  reference: ImageReference;
  /** Digest of the index the platform was selected from, if the reference named an index. */
  indexDigest: Digest | undefined;
  /** Digest of the platform's image manifest. */
  digest: Digest;
  mediaType: string;
  manifest: ImageManifest;
  manifestBytes: Uint8Array;
  /** The image config (parsed JSON, digest-checked). */
  config: Record<string, unknown>;
  configBytes: Uint8Array;
  platform: Platform;
}

/** Options of {@link RegistryClient.resolveImage}. */
export interface ResolveImageOptions extends CallOptions {
  /** Platform to select from an index. Default: the host's (see hostPlatform). */
  platform?: Platform;
  /**
   * Called once with the platform's manifest, verified, before its config is fetched: work that
   * needs only the manifest digest (referrers lookups) can start a round trip sooner. Default none.
   */
  onManifest?: (manifest: { digest: Digest; mediaType: string; manifest: ImageManifest }) => void;
}

/** Options of {@link RegistryClient.pushManifest}. */
export interface PushManifestOptions extends CallOptions {
  /** Tag to push under; default: the reference's tag, else by digest. */
  tag?: string;
  /** Media type; default: the document's `mediaType`. */
  mediaType?: string;
}

/** Options of {@link RegistryClient.referrers}. */
export interface ReferrersOptions extends CallOptions {
  /** Only referrers with this artifact type. */
  artifactType?: string;
}

type Capability = 'pull' | 'resolve' | 'push';

interface Endpoint extends AuthEndpoint {
  /** `/v2` or a mirror's API root. */
  apiRoot: string;
  mirror: boolean;
  capabilities: ReadonlySet<Capability>;
  /** `ns` query parameter sent to mirrors (the upstream registry). */
  ns: string | undefined;
}

interface RegistryRequest {
  ref: Pick<ImageReference, 'registry' | 'repository'>;
  method: Dispatcher.HttpMethod;
  /** Path below `/v2/<repository>/`, or an absolute URL on the same endpoint (upload locations). */
  path: string;
  headers?: Record<string, string>;
  body?: Uint8Array | undefined;
  capability: Capability;
  /** Statuses handed back to the caller. */
  ok: readonly number[];
  signal?: AbortSignal | undefined;
  /** Endpoint to use (uploads continue where they started). */
  endpoint?: Endpoint;
  /** A blob read: remember where the registry redirects it and go there directly next time. */
  blobRead?: boolean;
}

interface RegistryResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  url: string;
  endpoint: Endpoint;
}

function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function positiveInt(value: number | undefined, fallback: number, option: string, allowZero = false): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || (!allowZero && value === 0)) {
    throw invalidOption(option, `must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${String(value)}`);
  }
  return value;
}

async function discard(body: Dispatcher.ResponseData['body']): Promise<void> {
  try {
    await body.dump({ limit: 64 * 1024 });
  } catch {
    release(body);
  }
}

/** Destroys a response body we stop reading (its 'error' is expected and swallowed). */
function release(body: Dispatcher.ResponseData['body']): void {
  if (body.destroyed) return;
  body.on('error', () => {});
  body.destroy();
}

/** Reads a whole body, failing with IMGSTREAM_LIMIT_EXCEEDED beyond `limit` bytes. */
async function readLimited(body: Dispatcher.ResponseData['body'], limit: number, what: string, declared?: string): Promise<Buffer> {
  if (declared !== undefined && Number(declared) > limit) {
    release(body);
    throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `${what} is ${declared} bytes, more than the limit of ${limit}`, { limit });
  }
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > limit) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `${what} is larger than the limit of ${limit} bytes`, { limit });
      chunks.push(chunk);
    }
  } finally {
    if (!body.readableEnded) release(body);
  }
  return Buffer.concat(chunks, n);
}

/**
 * A client for OCI distribution registries: references, auth (anonymous, Basic, Bearer tokens
 * cached per scope), manifests with platform selection, verified blob streams, range reads,
 * retries with backoff, mirrors, and push (blobs, manifests, tags, referrers). One pooled
 * undici Agent serves every request. Call {@link close} when done.
 */
export class RegistryClient {
  readonly #agent: Agent;
  readonly #auth: Authenticator;
  readonly #insecure: ReadonlySet<string>;
  readonly #plainHttpLoopback: boolean;
  readonly #mirrors: Readonly<Record<string, readonly RegistryMirror[]>>;
  readonly #requestTimeoutMs: number;
  readonly #bodyIdleTimeoutMs: number;
  readonly #maxRetries: number;
  readonly #retryBaseDelayMs: number;
  readonly #retryMaxDelayMs: number;
  readonly #maxRetryAfterMs: number;
  readonly #maxRedirects: number;
  readonly #blobLocationTtlMs: number;
  /** Registry URL of a blob -> where it last redirected to, and until when (per `now`) that is reused. */
  readonly #blobLocations = new Map<string, { url: URL; crossed: boolean; until: number }>();
  readonly #maxManifestBytes: number;
  readonly #maxConfigBytes: number;
  readonly #userAgent: string;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #endpointCache = new Map<string, Endpoint[]>();
  readonly #mirrorCooldownMs: number;
  /** Mirror origin -> time (per `now`) until which it is skipped after a failure. */
  readonly #mirrorDownUntil = new Map<string, number>();
  /** Whether a repository's registry has the referrers API (registry + repository), once known. */
  readonly #referrersApi = new Map<string, boolean>();
  /** Fallback-tag reads in flight, by registry/repository@subject. */
  readonly #referrersTagReads = new Map<string, Promise<ImageIndex | undefined>>();
  #closed = false;

  constructor(options: RegistryClientOptions = {}) {
    const d = defaults.registry;
    this.#requestTimeoutMs = positiveInt(options.requestTimeoutMs, d.requestTimeoutMs, 'requestTimeoutMs');
    this.#bodyIdleTimeoutMs = positiveInt(options.bodyIdleTimeoutMs, d.bodyIdleTimeoutMs, 'bodyIdleTimeoutMs');
    const connectTimeoutMs = positiveInt(options.connectTimeoutMs, d.connectTimeoutMs, 'connectTimeoutMs');
    this.#maxRetries = positiveInt(options.maxRetries, d.maxRetries, 'maxRetries', true);
    this.#retryBaseDelayMs = positiveInt(options.retryBaseDelayMs, d.retryBaseDelayMs, 'retryBaseDelayMs', true);
    this.#retryMaxDelayMs = positiveInt(options.retryMaxDelayMs, d.retryMaxDelayMs, 'retryMaxDelayMs', true);
    this.#maxRetryAfterMs = positiveInt(options.maxRetryAfterMs, d.maxRetryAfterMs, 'maxRetryAfterMs', true);
    this.#maxRedirects = positiveInt(options.maxRedirects, d.maxRedirects, 'maxRedirects', true);
    this.#blobLocationTtlMs = positiveInt(options.blobLocationTtlMs, d.blobLocationTtlMs, 'blobLocationTtlMs', true);
    this.#maxManifestBytes = positiveInt(options.maxManifestBytes, d.maxManifestBytes, 'maxManifestBytes');
    this.#maxConfigBytes = positiveInt(options.maxConfigBytes, d.maxConfigBytes, 'maxConfigBytes');
    const connections = positiveInt(options.connectionsPerOrigin, d.connectionsPerOrigin, 'connectionsPerOrigin');
    const keepAliveTimeoutMs = positiveInt(options.keepAliveTimeoutMs, d.keepAliveTimeoutMs, 'keepAliveTimeoutMs');
    const tokenExpiryMarginMs = positiveInt(options.tokenExpiryMarginMs, d.tokenExpiryMarginMs, 'tokenExpiryMarginMs', true);
    this.#mirrorCooldownMs = positiveInt(options.mirrorCooldownMs, d.mirrorCooldownMs, 'mirrorCooldownMs', true);
    this.#userAgent = options.userAgent ?? d.userAgent;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    if (options.insecureRegistries !== undefined && !Array.isArray(options.insecureRegistries)) throw invalidOption('insecureRegistries', 'must be an array of hosts');
    this.#insecure = new Set(options.insecureRegistries ?? []);
    this.#plainHttpLoopback = options.plainHttpLoopback === true;
    this.#mirrors = options.mirrors ?? {};
    for (const [host, list] of Object.entries(this.#mirrors)) {
      if (!Array.isArray(list)) throw invalidOption(`mirrors[${JSON.stringify(host)}]`, 'must be an array');
      for (const m of list) {
        let u: URL;
        try {
          u = new URL(m.url);
        } catch {
          throw invalidOption(`mirrors[${JSON.stringify(host)}]`, `bad mirror URL ${JSON.stringify(m.url)}`);
        }
        if (u.protocol !== 'http:' && u.protocol !== 'https:') throw invalidOption(`mirrors[${JSON.stringify(host)}]`, `mirror URL must be http(s): ${m.url}`);
      }
    }
    let credentials: CredentialProvider | undefined;
    if (options.credentials !== undefined) {
      const c = options.credentials as CredentialProvider;
      credentials = typeof c.get === 'function' ? c : staticCredentials(options.credentials as Record<string, Credential>);
    }
    const ca = options.ca === undefined ? undefined : Array.isArray(options.ca) ? [...(options.ca as (string | Buffer)[])] : (options.ca as string | Buffer);
    this.#agent = new Agent({
      connections,
      keepAliveTimeout: keepAliveTimeoutMs,
      keepAliveMaxTimeout: Math.max(keepAliveTimeoutMs, 600_000),
      connect: { timeout: connectTimeoutMs, ...(ca !== undefined ? { ca } : {}) },
    });
    this.#auth = new Authenticator({
      credentials,
      now: this.#now,
      tokenExpiryMarginMs,
      defaultTokenLifetimeMs: d.defaultTokenLifetimeMs,
      fetchToken: (url, init) => this.#fetchToken(url, init),
      checkRealm: (realm) => this.#checkRealm(realm),
    });
  }

  /** Token requests made so far (tokens are cached per scope). */
  get tokenRequests(): number {
    return this.#auth.tokenRequests;
  }

  /**
   * Checks that `registry` speaks the distribution API (`GET /v2/`), authenticating if it
   * challenges. Resolves with the `Docker-Distribution-API-Version` header, if any.
   */
  async ping(registry: string, options: CallOptions = {}): Promise<{ apiVersion: string | undefined }> {
    const res = await this.#request({ ref: { registry, repository: '' }, method: 'GET', path: '', capability: 'resolve', ok: [200], signal: options.signal });
    await discard(res.body);
    return { apiVersion: header(res.headers, 'docker-distribution-api-version') };
  }

  /**
   * Fetches a manifest or index by the reference's digest (or `digest`) or tag, checks its size
   * limit, its digest and its structure.
   */
  async getManifest(ref: ImageReference, options: CallOptions & { digest?: Digest } = {}): Promise<FetchedManifest> {
    const pinned = options.digest ?? ref.digest;
    const target = pinned ?? ref.tag ?? 'latest';
    const what = `manifest ${formatReference(ref)}`;
    let res: RegistryResponse;
    let bytes: Buffer;
    for (let attempt = 0; ; attempt++) {
      res = await this.#request({
        ref,
        method: 'GET',
        path: `manifests/${target}`,
        headers: { accept: MANIFEST_ACCEPT },
        capability: pinned ? 'pull' : 'resolve',
        ok: [200],
        signal: options.signal,
      });
      try {
        bytes = await this.#readBody(res, this.#maxManifestBytes, what, options.signal);
        break;
      } catch (err) {
        if (!isRetryableNetworkError(err)) throw err;
        if (attempt >= this.#maxRetries) throw unavailable(res.url, attempt + 1, err);
        await this.#backoff(new URL(res.url), attempt, undefined, err, options.signal);
      }
    }
    const digest = sha256Digest(bytes);
    if (pinned !== undefined && digest !== pinned) throw digestMismatch(pinned, digest, what);
    const claimed = header(res.headers, 'docker-content-digest');
    if (pinned === undefined && claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) throw digestMismatch(claimed as Digest, digest, what);
    const contentType = header(res.headers, 'content-type');
    const document = parseManifest(bytes, contentType, digest);
    const mediaType = document.kind === 'manifest' ? document.manifest.mediaType : document.index.mediaType;
    return { digest, mediaType, size: bytes.length, bytes, document };
  }

  /**
   * Resolves a reference to one platform's image manifest and its verified config. An index is
   * narrowed with the platform (default: the host's); Docker schema 1 is refused.
   */
  async resolveImage(ref: ImageReference, options: ResolveImageOptions = {}): Promise<ResolvedImage> {
    const wanted = normalizePlatform(options.platform ?? hostPlatform());
    let fetched = await this.getManifest(ref, options);
    let indexDigest: Digest | undefined;
    let selected: Platform | undefined;
    for (let depth = 0; fetched.document.kind === 'index'; depth++) {
      if (depth >= 2) throw new ImgstreamError(ErrorCode.INVALID_MANIFEST, `${formatReference(ref)}: indexes nested too deeply`, { ref: formatReference(ref) });
      indexDigest ??= fetched.digest;
      const entry = selectPlatform(fetched.document.index, wanted, formatReference(ref));
      selected = entry.platform;
      fetched = await this.getManifest(ref, { digest: entry.digest, ...(options.signal ? { signal: options.signal } : {}) });
      if (fetched.size !== entry.size) {
        throw new ImgstreamError(ErrorCode.INVALID_MANIFEST, `manifest ${entry.digest} is ${fetched.size} bytes, the index says ${entry.size}`, { digest: entry.digest });
      }
    }
    const manifest = fetched.document.manifest;
    options.onManifest?.({ digest: fetched.digest, mediaType: fetched.mediaType, manifest });
    if (manifest.config.size > this.#maxConfigBytes) {
      throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `image config ${manifest.config.digest} is ${manifest.config.size} bytes, more than ${this.#maxConfigBytes}`, {
        digest: manifest.config.digest,
      });
    }
    const configBytes = await this.fetchBlob(ref, manifest.config, options);
    let config: unknown;
    try {
      config = JSON.parse(configBytes.toString());
    } catch (err) {
      throw new ImgstreamError(ErrorCode.INVALID_MANIFEST, `image config ${manifest.config.digest} is not valid JSON`, { digest: manifest.config.digest, cause: err });
    }
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw new ImgstreamError(ErrorCode.INVALID_MANIFEST, `image config ${manifest.config.digest} is not a JSON object`, { digest: manifest.config.digest });
    }
    const c = config as Record<string, unknown>;
    let platform: Platform;
    if (selected !== undefined) platform = selected;
    else if (typeof c.os === 'string' && typeof c.architecture === 'string') {
      platform = { os: c.os, architecture: c.architecture, ...(typeof c.variant === 'string' && c.variant !== '' ? { variant: c.variant } : {}) };
    } else platform = { os: 'unknown', architecture: 'unknown' };
    return { reference: ref, indexDigest, digest: fetched.digest, mediaType: fetched.mediaType, manifest, manifestBytes: fetched.bytes, config: c, configBytes, platform };
  }

  /** Fetches a small blob whole into memory, verified against its digest and size. */
  async fetchBlob(ref: ImageReference, descriptor: Pick<Descriptor, 'digest' | 'size'>, options: CallOptions = {}): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of this.blobStream(ref, descriptor, options)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  /**
   * A stream of a whole blob. Bytes are hashed as they pass; if the blob does not match its
   * digest (or size) the stream errors with IMGSTREAM_DIGEST_MISMATCH at the end instead of
   * ending. Interrupted transfers resume with a Range request. Destroying the stream releases
   * the connection.
   */
  blobStream(ref: ImageReference, descriptor: Pick<Descriptor, 'digest' | 'size'> | Digest, options: CallOptions = {}): Readable {
    this.#checkOpen();
    const digest = parseDigest(typeof descriptor === 'string' ? descriptor : descriptor.digest, 'blob digest');
    const size = typeof descriptor === 'string' ? undefined : descriptor.size;
    const chunks = this.#blobChunks(ref, digest, 0, undefined, size, options.signal);
    async function* verified(): AsyncGenerator<Buffer> {
      const digester = new Digester();
      for await (const chunk of chunks) {
        digester.update(chunk);
        yield chunk;
      }
      const actual = digester.digest();
      if (actual !== digest || (size !== undefined && digester.bytes !== size)) {
        throw digestMismatch(digest, size !== undefined && digester.bytes !== size ? `${actual} (${digester.bytes} of ${size} bytes)` : actual, `blob ${digest}`);
      }
    }
    return Readable.from(verified(), { objectMode: false, highWaterMark: 1 << 20 });
  }

  /**
   * A {@link RangeReader} over one blob, reading with HTTP Range requests. Built for many small
   * reads: pooled keep-alive connections and a cached token; a registry that ignores `Range` is
   * handled by skipping to the offset while streaming.
   */
  blobReader(ref: ImageReference, descriptor: Pick<Descriptor, 'digest' | 'size'>): RegistryBlobReader {
    this.#checkOpen();
    const digest = parseDigest(descriptor.digest, 'blob digest');
    if (!Number.isSafeInteger(descriptor.size) || descriptor.size < 0) throw invalidOption('descriptor.size', 'must be a non-negative integer');
    const size = descriptor.size;
    return new RegistryBlobReader({ readBlobRange: (offset, length, signal, buffer) => this.#readRange(ref, digest, size, offset, length, signal, buffer) }, digest, size);
  }

  /** The blob's size when the repository has it, else undefined (`HEAD /v2/<name>/blobs/<digest>`). */
  async blobExists(ref: ImageReference, digest: Digest, options: CallOptions & { push?: boolean } = {}): Promise<number | undefined> {
    const res = await this.#request({
      ref,
      method: 'HEAD',
      path: `blobs/${parseDigest(digest)}`,
      capability: options.push ? 'push' : 'pull',
      ok: [200, 404],
      signal: options.signal,
    });
    await discard(res.body);
    if (res.statusCode === 404) return undefined;
    const len = Number(header(res.headers, 'content-length'));
    return Number.isSafeInteger(len) ? len : 0;
  }

  /** Uploads a blob (monolithic POST + PUT) unless the repository already has it. */
  async pushBlob(ref: ImageReference, data: Uint8Array, options: CallOptions & { mediaType?: string } = {}): Promise<Descriptor> {
    const digest = sha256Digest(data);
    const descriptor: Descriptor = { mediaType: options.mediaType ?? 'application/octet-stream', digest, size: data.byteLength };
    if ((await this.blobExists(ref, digest, { ...options, push: true })) !== undefined) return descriptor;
    const start = await this.#request({ ref, method: 'POST', path: 'blobs/uploads/', capability: 'push', ok: [202], signal: options.signal, headers: { 'content-length': '0' } });
    await discard(start.body);
    const location = header(start.headers, 'location');
    if (location === undefined) throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, 'upload started without a Location header', { url: start.url });
    const url = new URL(location, start.url);
    url.searchParams.set('digest', digest);
    const put = await this.#request({
      ref,
      method: 'PUT',
      path: url.toString(),
      endpoint: start.endpoint,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(data.byteLength) },
      body: data,
      capability: 'push',
      ok: [201, 204],
      signal: options.signal,
    });
    await discard(put.body);
    return descriptor;
  }

  /**
   * Pushes a manifest or index (an object is serialised to JSON; bytes are sent as they are)
   * under `tag` (or the reference's tag) or by digest. When it has a `subject` and the registry
   * lacks the referrers API, the `sha256-<hex>` fallback tag index is updated.
   */
  async pushManifest(ref: ImageReference, manifest: ImageManifest | ImageIndex | Uint8Array, options: PushManifestOptions = {}): Promise<Descriptor> {
    const bytes = manifest instanceof Uint8Array ? manifest : Buffer.from(JSON.stringify(manifest));
    if (bytes.byteLength > this.#maxManifestBytes) {
      throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `manifest is ${bytes.byteLength} bytes, more than ${this.#maxManifestBytes}`, { limit: this.#maxManifestBytes });
    }
    const digest = sha256Digest(bytes);
    const doc = parseManifest(bytes, options.mediaType, digest);
    const body = doc.kind === 'manifest' ? doc.manifest : doc.index;
    const mediaType = options.mediaType ?? body.mediaType;
    const target = options.tag ?? ref.tag ?? digest;
    const res = await this.#request({
      ref,
      method: 'PUT',
      path: `manifests/${target}`,
      headers: { 'content-type': mediaType, 'content-length': String(bytes.byteLength) },
      body: bytes,
      capability: 'push',
      ok: [201, 200, 202],
      signal: options.signal,
    });
    await discard(res.body);
    const claimed = header(res.headers, 'docker-content-digest');
    if (claimed !== undefined && claimed !== digest) throw digestMismatch(digest, claimed, 'pushed manifest (registry digest)');
    const descriptor: Descriptor = { mediaType, digest, size: bytes.byteLength };
    const artifactType = body.artifactType ?? (doc.kind === 'manifest' ? doc.manifest.config.mediaType : undefined);
    if (artifactType !== undefined) descriptor.artifactType = artifactType;
    if (body.annotations !== undefined) descriptor.annotations = body.annotations;
    if (body.subject !== undefined && header(res.headers, 'oci-subject') === undefined) {
      await this.#addToReferrersTag(ref, body.subject.digest, descriptor, options.signal);
    }
    return descriptor;
  }

  /** Points `tag` at the manifest `digest` of the same repository. */
  async tagManifest(ref: ImageReference, digest: Digest, tag: string, options: CallOptions = {}): Promise<Descriptor> {
    const fetched = await this.getManifest(withDigest(ref, digest), options);
    const res = await this.#request({
      ref,
      method: 'PUT',
      path: `manifests/${tag}`,
      headers: { 'content-type': fetched.mediaType, 'content-length': String(fetched.size) },
      body: fetched.bytes,
      capability: 'push',
      ok: [201, 200, 202],
      signal: options.signal,
    });
    await discard(res.body);
    return { mediaType: fetched.mediaType, digest: fetched.digest, size: fetched.size };
  }

  /**
   * Descriptors of the manifests whose `subject` is `subject`: the OCI 1.1 referrers API, or, for
   * registries without it, the `sha256-<hex>` tag-schema fallback index. Until a repository's
   * registry has answered one referrers query, the fallback tag is asked for at the same time, so
   * a registry without the API costs no extra round trip.
   */
  async referrers(ref: ImageReference, subject: Digest, options: ReferrersOptions = {}): Promise<Descriptor[]> {
    parseDigest(subject, 'subject digest');
    const { artifactType, signal } = options;
    const filter = (list: Descriptor[], applied: boolean) => (artifactType === undefined || applied ? list : list.filter((d) => d.artifactType === artifactType));
    const key = `${ref.registry}/${ref.repository}`;
    const api = this.#referrersApi.get(key);
    let fallback: Promise<ImageIndex | undefined> | undefined;
    if (api !== false) {
      if (api === undefined) {
        fallback = this.#readReferrersTag(ref, subject, signal);
        // awaited below only when the API is missing; its failure is then reported there
        fallback.catch(() => undefined);
      }
      const query = artifactType !== undefined ? `?artifactType=${encodeURIComponent(artifactType)}` : '';
      const res = await this.#request({
        ref,
        method: 'GET',
        path: `referrers/${subject}${query}`,
        headers: { accept: MediaType.OCI_INDEX },
        capability: 'pull',
        ok: [200, 404],
        signal,
      });
      if (res.statusCode === 200 && (header(res.headers, 'content-type') ?? '').startsWith(MediaType.OCI_INDEX)) {
        const bytes = await this.#readBody(res, this.#maxManifestBytes, `referrers of ${subject}`, signal);
        const doc = parseManifest(bytes, MediaType.OCI_INDEX);
        if (doc.kind !== 'index') throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, 'referrers response is not an index', { url: res.url });
        this.#referrersApi.set(key, true);
        const applied = (header(res.headers, 'oci-filters-applied') ?? '').split(',').map((s) => s.trim()).includes('artifactType');
        return filter(doc.index.manifests, applied);
      }
      await discard(res.body);
      if (api === undefined) this.#referrersApi.set(key, false);
    }
    const index = await (fallback ?? this.#readReferrersTag(ref, subject, signal));
    return filter([...(index?.manifests ?? [])], false);
  }

  /** Closes the connection pool gracefully; later calls throw IMGSTREAM_CLOSED. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#agent.close();
  }

  /** Closes every connection at once, failing requests in flight with `err`. */
  async destroy(err?: Error): Promise<void> {
    this.#closed = true;
    await this.#agent.destroy(err ?? null);
  }

  // ---- referrers tag schema --------------------------------------------------------------

  /**
   * The fallback index for a referrers query: concurrent queries of one subject (an image's index
   * artifacts and its prefetch report, asked at once) share one request. The shared request runs
   * without any one caller's signal (each caller stops waiting when its own signal aborts).
   */
  #readReferrersTag(ref: ImageReference, subject: Digest, signal?: AbortSignal): Promise<ImageIndex | undefined> {
    const key = `${ref.registry}/${ref.repository}@${subject}`;
    let shared = this.#referrersTagReads.get(key);
    if (shared === undefined) {
      const request = this.#referrersTagIndex(ref, subject);
      const clear = (): void => {
        if (this.#referrersTagReads.get(key) === request) this.#referrersTagReads.delete(key);
      };
      request.then(clear, clear);
      this.#referrersTagReads.set(key, request);
      shared = request;
    }
    return abortable(shared, signal);
  }

  async #referrersTagIndex(ref: ImageReference, subject: Digest, signal?: AbortSignal): Promise<ImageIndex | undefined> {
    const tag = `sha256-${digestHex(subject)}`;
    try {
      const fetched = await this.getManifest({ ...ref, tag, digest: undefined }, signal ? { signal } : {});
      if (fetched.document.kind !== 'index') throw new ImgstreamError(ErrorCode.INVALID_MANIFEST, `referrers tag ${tag} is not an index`, { digest: fetched.digest });
      return fetched.document.index;
    } catch (err) {
      if (err instanceof ImgstreamError && err.code === ErrorCode.REGISTRY_NOT_FOUND) return undefined;
      throw err;
    }
  }

  async #addToReferrersTag(ref: ImageReference, subject: Digest, descriptor: Descriptor, signal?: AbortSignal): Promise<void> {
    const existing = await this.#referrersTagIndex(ref, subject, signal);
    const manifests = existing?.manifests ?? [];
    if (manifests.some((m) => m.digest === descriptor.digest)) return;
    const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [...manifests, descriptor] };
    await this.pushManifest(ref, index, { tag: `sha256-${digestHex(subject)}`, ...(signal ? { signal } : {}) });
  }

  // ---- blob bytes ----------------------------------------------------------------------

  async #readRange(ref: ImageReference, digest: Digest, size: number, offset: number, length: number, signal: AbortSignal | undefined, buffer?: Uint8Array): Promise<Uint8Array> {
    this.#checkOpen();
    const out = buffer !== undefined && buffer.byteLength >= length ? Buffer.from(buffer.buffer, buffer.byteOffset, length) : Buffer.allocUnsafe(length);
    let n = 0;
    for await (const chunk of this.#blobChunks(ref, digest, offset, offset + length, size, signal)) {
      chunk.copy(out, n);
      n += chunk.length;
    }
    return n === length ? out : out.subarray(0, n);
  }

  /**
   * Yields the bytes [start, end) of a blob (to its end when `end` is undefined). A 206 must
   * start at the requested offset; a 200 (Range ignored) is skipped forward to it. A body that
   * breaks off is resumed from the next missing byte, within the retry budget.
   */
  async *#blobChunks(ref: ImageReference, digest: Digest, start: number, end: number | undefined, size: number | undefined, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
    let pos = start;
    let failures = 0;
    let endpoint: Endpoint | undefined;
    while (end === undefined || pos < end) {
      const ranged = pos > 0 || end !== undefined;
      const headers: Record<string, string> = ranged ? { range: `bytes=${pos}-${end !== undefined ? end - 1 : ''}` } : {};
      const res = await this.#request({ ref, method: 'GET', path: `blobs/${digest}`, headers, capability: 'pull', ok: [200, 206], signal, blobRead: true, ...(endpoint ? { endpoint } : {}) });
      endpoint = res.endpoint;
      let skip = 0;
      if (res.statusCode === 206) {
        const cr = header(res.headers, 'content-range');
        const m = cr !== undefined ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(cr.trim()) : null;
        if (cr !== undefined && (m === null || Number(m[1]) !== pos || (end !== undefined && Number(m[2]) > end - 1) || (size !== undefined && m[3] !== '*' && Number(m[3]) !== size))) {
          release(res.body);
          throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `blob ${digest}: Content-Range ${JSON.stringify(cr)} does not answer bytes=${pos}-${end !== undefined ? end - 1 : ''}`, {
            digest,
            url: res.url,
          });
        }
      } else {
        skip = pos;
        const len = Number(header(res.headers, 'content-length'));
        if (size !== undefined && Number.isSafeInteger(len) && len !== size) {
          release(res.body);
          throw digestMismatch(digest, `a blob of ${len} bytes (expected ${size})`, `blob ${digest}`);
        }
      }
      const want = end === undefined ? Infinity : end - pos;
      let got = 0;
      try {
        for await (const raw of res.body as AsyncIterable<Buffer>) {
          let chunk = raw;
          if (skip > 0) {
            if (chunk.length <= skip) {
              skip -= chunk.length;
              continue;
            }
            chunk = chunk.subarray(skip);
            skip = 0;
          }
          if (got + chunk.length > want) {
            if (res.statusCode === 206) {
              throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `blob ${digest}: 206 body longer than the requested range`, { digest, url: res.url });
            }
            chunk = chunk.subarray(0, want - got);
          }
          got += chunk.length;
          pos += chunk.length;
          if (size !== undefined && pos > size) throw digestMismatch(digest, `more than ${size} bytes`, `blob ${digest}`);
          yield chunk;
          if (got >= want) break;
        }
        if (end === undefined) {
          if (size === undefined || pos >= size) return;
          throw new TruncatedBodyError(size - start, pos - start);
        }
        if (pos < end) throw new TruncatedBodyError(end - start, pos - start);
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (!isRetryableNetworkError(err) || failures >= this.#maxRetries) {
          if (isRetryableNetworkError(err)) throw unavailable(res.url, failures + 1, err);
          throw err;
        }
        const delay = backoffDelayMs(failures, this.#retryBaseDelayMs, this.#retryMaxDelayMs, this.#random);
        publish(retryChannel, { url: res.url, attempt: failures + 1, delayMs: delay, reason: (err as Error).message, resumeAt: pos });
        failures++;
        await sleep(delay, signal);
      } finally {
        if (!res.body.readableEnded) release(res.body);
      }
    }
  }

  // ---- HTTP ----------------------------------------------------------------------------

  #checkOpen(): void {
    if (this.#closed) throw new ImgstreamError(ErrorCode.CLOSED, 'the registry client is closed');
  }

  #schemeFor(host: string): 'http' | 'https' {
    return this.#insecure.has(host) || (this.#plainHttpLoopback && isLoopbackHost(host)) ? 'http' : 'https';
  }

  #checkRealm(realm: URL): void {
    if (realm.protocol === 'https:') return;
    if (realm.protocol === 'http:' && this.#schemeFor(realm.host) === 'http') return;
    throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `token realm ${realm.origin} is plain HTTP; mark ${realm.host} insecure to allow it`, { url: realm.origin });
  }

  #endpoints(registry: string): Endpoint[] {
    let list = this.#endpointCache.get(registry);
    if (list !== undefined) return list;
    list = [];
    for (const m of this.#mirrors[registry] ?? []) {
      const u = new URL(m.url);
      const path = u.pathname.replace(/\/+$/, '');
      list.push({
        origin: u.origin,
        credentialHost: u.host,
        apiRoot: m.overridePath ? path : `${path}/v2`,
        mirror: true,
        capabilities: new Set(m.capabilities ?? ['pull', 'resolve']),
        ns: registry,
      });
    }
    const host = registryEndpointHost(registry);
    list.push({ origin: `${this.#schemeFor(host)}://${host}`, credentialHost: registry, apiRoot: '/v2', mirror: false, capabilities: new Set(['pull', 'resolve', 'push']), ns: undefined });
    this.#endpointCache.set(registry, list);
    return list;
  }

  /** Sends a registry API request: mirrors first (when capable), then the registry itself. */
  async #request(req: RegistryRequest): Promise<RegistryResponse> {
    this.#checkOpen();
    req.signal?.throwIfAborted();
    if (req.endpoint !== undefined) return this.#requestEndpoint(req.endpoint, req);
    const endpoints = this.#endpoints(req.ref.registry);
    let lastError: unknown;
    for (const ep of endpoints) {
      if (!ep.capabilities.has(req.capability)) continue;
      if (ep.mirror) {
        const downUntil = this.#mirrorDownUntil.get(ep.origin);
        if (downUntil !== undefined && downUntil > this.#now()) continue;
      }
      try {
        return await this.#requestEndpoint(ep, req);
      } catch (err) {
        if (req.signal?.aborted) throw req.signal.reason;
        if (!ep.mirror) throw err;
        lastError = err;
        // A mirror without the content is fine (a cache miss); a broken one is skipped for a while.
        const miss = err instanceof ImgstreamError && err.code === ErrorCode.REGISTRY_NOT_FOUND;
        if (!miss) this.#mirrorDownUntil.set(ep.origin, this.#now() + this.#mirrorCooldownMs);
        publish(mirrorChannel, { mirror: ep.origin, registry: req.ref.registry, reason: (err as Error).message, cooldown: !miss });
      }
    }
    throw lastError ?? new ImgstreamError(ErrorCode.REGISTRY_UNAVAILABLE, `no endpoint for ${req.ref.registry}`);
  }

  #url(ep: Endpoint, req: RegistryRequest): URL {
    if (/^https?:\/\//.test(req.path)) {
      const u = new URL(req.path);
      if (u.origin !== ep.origin) throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `registry sent an upload location on another origin (${u.origin})`, { url: u.origin });
      return u;
    }
    const base = req.ref.repository === '' ? `${ep.apiRoot}/` : `${ep.apiRoot}/${req.ref.repository}/${req.path}`;
    const u = new URL(base, ep.origin);
    if (ep.ns !== undefined) u.searchParams.set('ns', ep.ns);
    return u;
  }

  async #requestEndpoint(ep: Endpoint, req: RegistryRequest): Promise<RegistryResponse> {
    const url = this.#url(ep, req);
    const scope = req.ref.repository === '' ? undefined : `repository:${req.ref.repository}:${req.capability === 'push' ? 'pull,push' : 'pull'}`;
    const signal = req.signal;
    const maxRetries = ep.mirror ? Math.min(this.#maxRetries, defaults.registry.mirrorMaxRetries) : this.#maxRetries;
    let attempt = 0;
    let reauthenticated = false;
    for (;;) {
      const authorization = await this.#auth.authorization(ep, scope, signal);
      const headers: Record<string, string> = { 'user-agent': this.#userAgent, ...req.headers };
      if (authorization !== undefined) headers.authorization = authorization;
      let res: RegistryResponse;
      try {
        const r = await this.#dispatch(url, req.method, headers, req.body, signal, req.blobRead === true);
        res = { ...r, endpoint: ep };
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (err instanceof ImgstreamError) throw err;
        if (isRetryableNetworkError(err) && attempt < maxRetries) {
          await this.#backoff(url, attempt++, undefined, err, signal);
          continue;
        }
        throw unavailable(url.href, attempt + 1, err);
      }
      publish(requestChannel, { method: req.method, url: res.url, status: res.statusCode, attempt });
      const status = res.statusCode;
      if (status === 401 && !reauthenticated) {
        reauthenticated = true;
        await discard(res.body);
        if (await this.#auth.challenge(ep, res.headers['www-authenticate'], scope, authorization, signal)) continue;
        throw this.#statusError(res, req, '');
      }
      if (req.ok.includes(status)) return res;
      if ((status >= 500 || status === 429) && attempt < maxRetries) {
        const retryAfter = parseRetryAfterMs(res.headers['retry-after'], this.#maxRetryAfterMs, this.#now());
        await discard(res.body);
        await this.#backoff(url, attempt++, retryAfter, `HTTP ${status}`, signal);
        continue;
      }
      const text = await this.#errorText(res);
      throw this.#statusError(res, req, text, attempt + 1);
    }
  }

  async #backoff(url: URL, attempt: number, retryAfterMs: number | undefined, reason: unknown, signal: AbortSignal | undefined): Promise<void> {
    const delay = retryAfterMs ?? backoffDelayMs(attempt, this.#retryBaseDelayMs, this.#retryMaxDelayMs, this.#random);
    publish(retryChannel, { url: url.href, attempt: attempt + 1, delayMs: delay, reason: reason instanceof Error ? reason.message : String(reason) });
    await sleep(delay, signal);
  }

  /**
   * One request, following redirects by hand; `Authorization` never leaves the first origin. A blob
   * read (`remember`) goes straight to where the registry last redirected that blob, while that is
   * fresh; when the remembered URL fails in any way (expired signature, gone, unreachable), it is
   * dropped and the registry is asked again within the same attempt.
   */
  async #dispatch(
    first: URL,
    method: Dispatcher.HttpMethod,
    headers: Record<string, string>,
    body: Uint8Array | undefined,
    signal: AbortSignal | undefined,
    remember = false,
  ): Promise<Omit<RegistryResponse, 'endpoint'>> {
    const cacheable = remember && method === 'GET' && this.#blobLocationTtlMs > 0;
    if (cacheable) {
      const reused = await this.#viaBlobLocation(first, headers, signal);
      if (reused !== undefined) return reused;
    }
    let url = first;
    let crossed = false;
    for (let hop = 0; ; hop++) {
      const res = await this.#send(url, method, headers, crossed, body, signal);
      const location = header(res.headers, 'location');
      const redirect = [301, 302, 303, 307, 308].includes(res.statusCode) && location !== undefined && (method === 'GET' || method === 'HEAD');
      if (!redirect) {
        if (cacheable && url !== first && res.statusCode >= 200 && res.statusCode < 300) this.#rememberBlobLocation(first, url, crossed);
        return { statusCode: res.statusCode, headers: res.headers, body: res.body, url: url.href };
      }
      await discard(res.body);
      if (hop >= this.#maxRedirects) {
        throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `more than ${this.#maxRedirects} redirects from ${first.href}`, { url: first.href });
      }
      const next = new URL(location as string, url);
      if (next.protocol !== 'https:' && !(next.protocol === 'http:' && url.protocol === 'http:')) {
        throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `refusing redirect from ${url.origin} to ${next.origin}`, { url: next.origin });
      }
      if (next.origin !== first.origin) crossed = true;
      url = next;
    }
  }

  /** One HTTP exchange with `url`; `Authorization` is left out once a redirect has left the registry's origin (`crossed`). */
  #send(url: URL, method: Dispatcher.HttpMethod, headers: Record<string, string>, crossed: boolean, body: Uint8Array | undefined, signal: AbortSignal | undefined): Promise<Dispatcher.ResponseData> {
    const h = { ...headers };
    if (crossed) delete h.authorization;
    return this.#agent.request({
      origin: url.origin,
      path: url.pathname + url.search,
      method,
      headers: h,
      body: body === undefined ? null : Buffer.from(body.buffer, body.byteOffset, body.byteLength),
      signal: signal ?? null,
      headersTimeout: this.#requestTimeoutMs,
      bodyTimeout: this.#bodyIdleTimeoutMs,
    });
  }

  /** A blob read sent to the blob's remembered redirect target; undefined when there is none or it failed. */
  async #viaBlobLocation(first: URL, headers: Record<string, string>, signal: AbortSignal | undefined): Promise<Omit<RegistryResponse, 'endpoint'> | undefined> {
    const key = first.href;
    const known = this.#blobLocations.get(key);
    if (known === undefined) return undefined;
    if (known.until <= this.#now()) {
      this.#blobLocations.delete(key);
      return undefined;
    }
    let reason: string;
    try {
      const res = await this.#send(known.url, 'GET', headers, known.crossed, undefined, signal);
      if (res.statusCode >= 200 && res.statusCode < 300) return { statusCode: res.statusCode, headers: res.headers, body: res.body, url: known.url.href };
      await discard(res.body);
      reason = `HTTP ${res.statusCode}`;
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      reason = err instanceof Error ? err.message : String(err);
    }
    // a failed entry goes, unless a concurrent read has replaced it already
    if (this.#blobLocations.get(key) === known) this.#blobLocations.delete(key);
    publish(blobLocationChannel, { url: key, location: known.url.href, reason });
    return undefined;
  }

  /** `crossed`: the redirects left the registry's origin on the way (no `Authorization` from then on). */
  #rememberBlobLocation(first: URL, location: URL, crossed: boolean): void {
    const key = first.href;
    this.#blobLocations.delete(key); // re-inserted as the newest
    this.#blobLocations.set(key, { url: location, crossed, until: this.#now() + this.#blobLocationTtlMs });
    while (this.#blobLocations.size > defaults.registry.maxBlobLocations) {
      const oldest = this.#blobLocations.keys().next().value as string;
      this.#blobLocations.delete(oldest);
    }
  }

  async #errorText(res: RegistryResponse): Promise<string> {
    try {
      const buf = await readLimited(res.body, 64 * 1024, 'error body');
      return buf.toString('utf8');
    } catch {
      return '';
    }
  }

  #statusError(res: RegistryResponse, req: RegistryRequest, text: string, attempts = 1): ImgstreamError {
    const status = res.statusCode;
    let detail = '';
    try {
      const j = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
      if (Array.isArray(j.errors)) detail = j.errors.map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
    } catch {
      detail = text.trim().slice(0, 200);
    }
    const what = `${req.method} ${res.url} -> HTTP ${status}${detail ? ` (${detail})` : ''}`;
    const fields = { status, url: res.url, ref: req.ref.repository ? `${req.ref.registry}/${req.ref.repository}` : req.ref.registry };
    if (status === 401) return new ImgstreamError(ErrorCode.REGISTRY_UNAUTHORIZED, `unauthorized: ${what}`, fields);
    if (status === 403) return new ImgstreamError(ErrorCode.REGISTRY_DENIED, `access denied: ${what}`, fields);
    if (status === 404) return new ImgstreamError(ErrorCode.REGISTRY_NOT_FOUND, `not found: ${what}`, fields);
    if (status === 416) return new ImgstreamError(ErrorCode.RANGE_NOT_SATISFIABLE, `range not satisfiable: ${what}`, { ...fields, rangeHeader: req.headers?.range });
    if (status >= 500 || status === 429) return unavailable(res.url, attempts, new Error(what), status);
    return new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `unexpected answer: ${what}`, fields);
  }

  async #readBody(res: RegistryResponse, limit: number, what: string, signal: AbortSignal | undefined): Promise<Buffer> {
    try {
      return await readLimited(res.body, limit, what, header(res.headers, 'content-length'));
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw err;
    }
  }

  async #fetchToken(url: URL, init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string; signal?: AbortSignal | undefined }): Promise<TokenHttpResult> {
    let attempt = 0;
    for (;;) {
      try {
        const res = await this.#agent.request({
          origin: url.origin,
          path: url.pathname + url.search,
          method: init.method,
          headers: { 'user-agent': this.#userAgent, ...init.headers },
          body: init.body ?? null,
          signal: init.signal ?? null,
          headersTimeout: this.#requestTimeoutMs,
          bodyTimeout: this.#bodyIdleTimeoutMs,
        });
        if ((res.statusCode >= 500 || res.statusCode === 429) && attempt < this.#maxRetries) {
          const retryAfter = parseRetryAfterMs(res.headers['retry-after'], this.#maxRetryAfterMs, this.#now());
          await discard(res.body);
          await this.#backoff(url, attempt++, retryAfter, `HTTP ${res.statusCode}`, init.signal);
          continue;
        }
        const text = (await readLimited(res.body, defaults.registry.maxSmallBodyBytes, 'token response', header(res.headers, 'content-length'))).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
          if (res.statusCode === 200) throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `token server ${url.origin} answered with malformed JSON`, { url: url.origin });
        }
        return { status: res.statusCode, json, text };
      } catch (err) {
        if (init.signal?.aborted) throw init.signal.reason;
        if (err instanceof ImgstreamError) throw err;
        if (isRetryableNetworkError(err) && attempt < this.#maxRetries) {
          await this.#backoff(url, attempt++, undefined, err, init.signal);
          continue;
        }
        throw unavailable(url.origin + url.pathname, attempt + 1, err);
      }
    }
  }
}

/** True when `mediaType` is an index or manifest list. */
export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_MEDIA_TYPES.includes(mediaType);
}
