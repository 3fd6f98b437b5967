import { channel, publish } from '../diagnostics.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { Credential, CredentialProvider } from './credentials.js';
import { parseWwwAuthenticate } from './www-authenticate.js';
import { abortable } from '../abortable.js';

const tokenChannel = channel('core:registry-token');

/** What the authenticator needs from an endpoint. */
export interface AuthEndpoint {
  /** `https://host:port` */
  readonly origin: string;
  /** The registry host whose credentials apply (`docker.io` for Docker Hub). */
  readonly credentialHost: string;
}

/** A token endpoint answer, already parsed from JSON. */
export interface TokenHttpResult {
  status: number;
  json: unknown;
  text: string;
}

/** Makes an HTTP request to a token realm (provided by the client: retries, timeouts, TLS). */
export type TokenFetcher = (
  url: URL,
  init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string; signal?: AbortSignal | undefined },
) => Promise<TokenHttpResult>;

export interface AuthenticatorOptions {
  credentials: CredentialProvider | undefined;
  fetchToken: TokenFetcher;
  now: () => number;
  tokenExpiryMarginMs: number;
  defaultTokenLifetimeMs: number;
  /** Called before a realm URL is used; throws when its scheme is not allowed. */
  checkRealm: (realm: URL) => void;
}

interface OriginState {
  scheme: 'basic' | 'bearer';
  realm?: string;
  service?: string;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

function basicHeader(c: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

/**
 * Registry authentication: learns each origin's scheme from its `WWW-Authenticate` challenge,
 * sends Basic credentials or Bearer tokens, caches tokens per (origin, realm, service, scope)
 * until shortly before they expire, deduplicates concurrent token requests, and drops a token
 * the registry rejected.
 */
export class Authenticator {
  readonly #opts: AuthenticatorOptions;
  readonly #origins = new Map<string, OriginState>();
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<CachedToken>>();
  /** Token requests made (for tests and metrics). */
  tokenRequests = 0;

  constructor(options: AuthenticatorOptions) {
    this.#opts = options;
  }

  /** The `Authorization` header for a request to `ep` needing `scope`, or undefined (anonymous). */
  async authorization(ep: AuthEndpoint, scope: string | undefined, signal?: AbortSignal): Promise<string | undefined> {
    const state = this.#origins.get(ep.origin);
    if (state === undefined) return undefined;
    if (state.scheme === 'basic') {
      const c = await this.#credential(ep, signal);
      return c !== undefined && 'username' in c ? basicHeader(c) : undefined;
    }
    const token = await this.#token(ep, state, scope, signal);
    return token === '' ? undefined : `Bearer ${token}`;
  }

  /**
   * Handles a 401: records the challenge and forgets a rejected token. Resolves true when a retry
   * with new authorization can succeed, false when it cannot (no or rejected credentials).
   */
  async challenge(ep: AuthEndpoint, header: string | string[] | undefined, scope: string | undefined, failed: string | undefined, signal?: AbortSignal): Promise<boolean> {
    const challenges = parseWwwAuthenticate(header);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer !== undefined) {
      const state: OriginState = { scheme: 'bearer', realm: bearer.params.realm as string };
      if (bearer.params.service !== undefined) state.service = bearer.params.service;
      this.#origins.set(ep.origin, state);
      const effectiveScope = scope ?? bearer.params.scope;
      const key = this.#key(ep, state, effectiveScope);
      const cached = this.#tokens.get(key);
      if (failed !== undefined && cached !== undefined && failed === `Bearer ${cached.token}`) {
        this.#tokens.delete(key);
        publish(tokenChannel, { event: 'rejected', origin: ep.origin, scope: effectiveScope });
      }
      if (bearer.params.error === 'insufficient_scope' && failed !== undefined && cached === undefined) return false;
      return true;
    }
    if (basic !== undefined) {
      this.#origins.set(ep.origin, { scheme: 'basic' });
      if (failed !== undefined && failed.startsWith('Basic ')) return false;
      const c = await this.#credential(ep, signal);
      return c !== undefined && 'username' in c;
    }
    return false;
  }

  /** Forgets every cached token and challenge. */
  clear(): void {
    this.#origins.clear();
    this.#tokens.clear();
  }

  #key(ep: AuthEndpoint, state: OriginState, scope: string | undefined): string {
    return `${ep.origin}\n${state.realm ?? ''}\n${state.service ?? ''}\n${scope ?? ''}`;
  }

  #credential(ep: AuthEndpoint, signal?: AbortSignal): Promise<Credential | undefined> {
    return this.#opts.credentials?.get(ep.credentialHost, { signal }) ?? Promise.resolve(undefined);
  }

  async #token(ep: AuthEndpoint, state: OriginState, scope: string | undefined, signal?: AbortSignal): Promise<string> {
    const key = this.#key(ep, state, scope);
    const cached = this.#tokens.get(key);
    if (cached !== undefined && cached.expiresAt - this.#opts.tokenExpiryMarginMs > this.#opts.now()) return cached.token;
    let p = this.#inflight.get(key);
    if (p === undefined) {
      // The shared fetch is not tied to one caller's signal; each caller stops waiting on its own abort.
      p = this.#fetchToken(ep, state, scope);
      this.#inflight.set(key, p);
      p.then(
        (t) => {
          this.#tokens.set(key, t);
          this.#inflight.delete(key);
        },
        () => this.#inflight.delete(key),
      );
    }
    return (await abortable(p, signal)).token;
  }

  async #fetchToken(ep: AuthEndpoint, state: OriginState, scope: string | undefined): Promise<CachedToken> {
    const realm = new URL(state.realm as string);
    this.#opts.checkRealm(realm);
    const cred = await this.#credential(ep);
    const headers: Record<string, string> = { accept: 'application/json' };
    let result: TokenHttpResult;
    this.tokenRequests++;
    const started = this.#opts.now();
    if (cred !== undefined && 'identityToken' in cred) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: cred.identityToken, client_id: 'imgstream' });
      if (state.service !== undefined) form.set('service', state.service);
      if (scope !== undefined) form.set('scope', scope);
      headers['content-type'] = 'application/x-www-form-urlencoded';
      result = await this.#opts.fetchToken(realm, { method: 'POST', headers, body: form.toString() });
    } else {
      if (state.service !== undefined) realm.searchParams.set('service', state.service);
      if (scope !== undefined) realm.searchParams.set('scope', scope);
      if (cred !== undefined) headers.authorization = basicHeader(cred);
      result = await this.#opts.fetchToken(realm, { method: 'GET', headers });
    }
    publish(tokenChannel, { event: 'fetched', origin: ep.origin, scope, status: result.status });
    if (result.status === 401) {
      throw new ImgstreamError(ErrorCode.REGISTRY_UNAUTHORIZED, `token server ${realm.origin} refused the credentials for ${ep.credentialHost}`, {
        status: 401,
        url: realm.origin + realm.pathname,
      });
    }
    if (result.status === 403) {
      throw new ImgstreamError(ErrorCode.REGISTRY_DENIED, `token server ${realm.origin} denied ${scope ?? 'access'}`, { status: 403, url: realm.origin + realm.pathname });
    }
    if (result.status !== 200) {
      throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `token server ${realm.origin} answered HTTP ${result.status}: ${result.text.slice(0, 200)}`, {
        status: result.status,
        url: realm.origin + realm.pathname,
      });
    }
    const body = result.json as { token?: unknown; access_token?: unknown; expires_in?: unknown } | null;
    const token = typeof body?.token === 'string' && body.token !== '' ? body.token : body?.access_token;
    if (typeof token !== 'string' || token === '') {
      throw new ImgstreamError(ErrorCode.REGISTRY_PROTOCOL, `token server ${realm.origin} answered without a token`, { url: realm.origin + realm.pathname });
    }
    const expiresIn = typeof body?.expires_in === 'number' && body.expires_in > 0 ? body.expires_in * 1000 : this.#opts.defaultTokenLifetimeMs;
    return { token, expiresAt: started + expiresIn };
  }
}

