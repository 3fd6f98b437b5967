import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { defaults } from '../defaults.js';
import { ErrorCode, ImgstreamError, invalidOption } from '../errors.js';

/** Credentials for one registry: a user name and password, or an identity (refresh) token. */
export type Credential = { username: string; password: string } | { identityToken: string };

/** Looks up credentials for a registry host (`host[:port]`, Docker Hub is `docker.io`). */
export interface CredentialProvider {
  get(registry: string, options?: { signal?: AbortSignal }): Promise<Credential | undefined>;
}

/** A provider over a fixed map `{ [registry]: Credential }`. */
export function staticCredentials(map: Readonly<Record<string, Credential>>): CredentialProvider {
  for (const [host, c] of Object.entries(map)) checkCredential(c, `credentials[${JSON.stringify(host)}]`);
  return {
    get: async (registry) => map[registry] ?? (registry === 'docker.io' ? map['index.docker.io'] ?? map['registry-1.docker.io'] : undefined),
  };
}

function checkCredential(c: unknown, option: string): void {
  if (typeof c !== 'object' || c === null) throw invalidOption(option, 'must be { username, password } or { identityToken }');
  const r = c as Record<string, unknown>;
  if ('identityToken' in r) {
    if (typeof r.identityToken !== 'string' || r.identityToken === '') throw invalidOption(option, 'identityToken must be a non-empty string');
  } else if (typeof r.username !== 'string' || typeof r.password !== 'string') {
    throw invalidOption(option, 'username and password must be strings');
  }
}

/** Tries providers in order; the first that knows the registry wins. */
export function chainCredentials(...providers: CredentialProvider[]): CredentialProvider {
  return {
    async get(registry, options) {
      for (const p of providers) {
        const c = await p.get(registry, options);
        if (c !== undefined) return c;
      }
      return undefined;
    },
  };
}

/** Options of {@link DockerConfigCredentials}. */
export interface DockerConfigCredentialsOptions {
  /** Path of the Docker `config.json` (the CLI passes `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`). Required. */
  path: string;
  /**
   * Directories searched for `docker-credential-<name>` helpers. Default: the `PATH` of this
   * process (helpers are found the way a shell finds them).
   */
  helperDirs?: readonly string[];
  /** Time a helper may run, ms. Default {@link defaults}.registry.credentialHelperTimeoutMs. */
  helperTimeoutMs?: number;
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** The keys a Docker config may use for `registry`, most specific first. */
function configKeys(registry: string): string[] {
  if (registry === 'docker.io') {
    return ['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io', 'https://index.docker.io/v1', 'https://docker.io'];
  }
  return [registry, `https://${registry}`, `http://${registry}`, `https://${registry}/v1/`, `https://${registry}/v2/`, `http://${registry}/v1/`, `http://${registry}/v2/`];
}

function normaliseConfigKey(key: string): string {
  return key.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
}

/**
 * Credentials from a Docker `config.json`: `credHelpers[registry]`, then `credsStore`, then
 * `auths` (base64 `auth`, `username`/`password`, or `identitytoken`). Helpers are run as
 * `docker-credential-<name> get` with the server URL on stdin. The file is read on every lookup
 * that misses the in-memory cache, so edits are picked up.
 */
export class DockerConfigCredentials implements CredentialProvider {
  readonly #path: string;
  readonly #helperDirs: readonly string[] | undefined;
  readonly #helperTimeoutMs: number;
  readonly #cache = new Map<string, Promise<Credential | undefined>>();

  constructor(options: DockerConfigCredentialsOptions) {
    if (typeof options?.path !== 'string' || options.path === '') throw invalidOption('path', 'must be the path of a Docker config.json');
    this.#path = options.path;
    this.#helperDirs = options.helperDirs;
    this.#helperTimeoutMs = options.helperTimeoutMs ?? defaults.registry.credentialHelperTimeoutMs;
  }

  get(registry: string, options: { signal?: AbortSignal } = {}): Promise<Credential | undefined> {
    let p = this.#cache.get(registry);
    if (p === undefined) {
      p = this.#lookup(registry, options.signal);
      this.#cache.set(registry, p);
      p.catch(() => this.#cache.delete(registry));
    }
    return p;
  }

  async #lookup(registry: string, signal?: AbortSignal): Promise<Credential | undefined> {
    let text: string;
    try {
      text = await readFile(this.#path, { encoding: 'utf8', signal });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    let config: DockerConfigFile;
    try {
      config = JSON.parse(text) as DockerConfigFile;
    } catch (err) {
      throw new ImgstreamError(ErrorCode.INVALID_OPTION, `Docker config ${this.#path} is not valid JSON`, { path: this.#path, cause: err });
    }
    if (typeof config !== 'object' || config === null) return undefined;
    const keys = configKeys(registry);
    const helpers = config.credHelpers ?? {};
    for (const [key, helper] of Object.entries(helpers)) {
      if (keys.includes(key) || normaliseConfigKey(key) === registry) return this.#runHelper(helper, keys[0] as string, signal);
    }
    if (typeof config.credsStore === 'string' && config.credsStore !== '') {
      const c = await this.#runHelper(config.credsStore, keys[0] as string, signal);
      if (c !== undefined) return c;
    }
    const auths = config.auths ?? {};
    let entry = keys.map((k) => auths[k]).find((e) => e !== undefined);
    if (entry === undefined) entry = Object.entries(auths).find(([k]) => normaliseConfigKey(k) === registry)?.[1];
    if (entry === undefined || typeof entry !== 'object') return undefined;
    if (typeof entry.identitytoken === 'string' && entry.identitytoken !== '') return { identityToken: entry.identitytoken };
    if (typeof entry.auth === 'string' && entry.auth !== '') {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon <= 0) {
        throw new ImgstreamError(ErrorCode.INVALID_OPTION, `Docker config ${this.#path}: auths entry for ${registry} has a malformed "auth" (expected base64 of user:password)`, {
          path: this.#path,
        });
      }
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    if (typeof entry.username === 'string' && typeof entry.password === 'string') return { username: entry.username, password: entry.password };
    return undefined;
  }

  #runHelper(name: string, serverUrl: string, signal?: AbortSignal): Promise<Credential | undefined> {
    return runCredentialHelper(name, serverUrl, { helperDirs: this.#helperDirs, timeoutMs: this.#helperTimeoutMs, signal });
  }
}

/**
 * Runs `docker-credential-<name> get` with `serverUrl` on stdin and parses its JSON answer
 * (`{ Username, Secret }`; Username `<token>` means Secret is an identity token). A helper
 * that reports "credentials not found" yields undefined; any other failure is IMGSTREAM_CREDENTIAL_HELPER.
 */
export function runCredentialHelper(
  name: string,
  serverUrl: string,
  options: { helperDirs?: readonly string[] | undefined; timeoutMs?: number; signal?: AbortSignal | undefined } = {},
): Promise<Credential | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    return Promise.reject(new ImgstreamError(ErrorCode.CREDENTIAL_HELPER, `invalid credential helper name ${JSON.stringify(name)}`, { helper: name }));
  }
  const exe = `docker-credential-${name}`;
  const candidates = options.helperDirs ? options.helperDirs.map((d) => join(d, exe)) : [exe];
  const timeoutMs = options.timeoutMs ?? defaults.registry.credentialHelperTimeoutMs;
  const fail = (message: string, cause?: unknown) =>
    new ImgstreamError(ErrorCode.CREDENTIAL_HELPER, `credential helper ${exe}: ${message}`, { helper: name, ...(cause !== undefined ? { cause } : {}) });

  const attempt = (index: number): Promise<Credential | undefined> =>
    new Promise((resolve, reject) => {
      const signal = options.signal;
      if (signal?.aborted) return reject(signal.reason);
      const file = candidates[index] as string;
      const child = spawn(file, ['get'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let settled = false;
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const onAbort = () => {
        child.kill('SIGKILL');
        finish(() => reject(signal?.reason));
      };
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        finish(() => reject(fail(`did not answer within ${timeoutMs} ms`)));
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        if (stdout.length < 1 << 20) stdout += d;
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        if (stderr.length < 1 << 16) stderr += d;
      });
      child.stdin.on('error', () => {});
      child.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' && index + 1 < candidates.length) finish(() => resolve(attempt(index + 1)));
        else finish(() => reject(fail(err.code === 'ENOENT' ? 'not found' : err.message, err)));
      });
      child.on('close', (code) => {
        finish(() => {
          if (code !== 0) {
            if (/credentials not found/i.test(stdout + stderr)) return resolve(undefined);
            return reject(fail(`exited with status ${code}: ${(stderr || stdout).trim().slice(0, 500)}`));
          }
          let parsed: unknown;
          try {
            parsed = JSON.parse(stdout);
          } catch (err) {
            return reject(fail('answered with malformed JSON', err));
          }
          const r = parsed as { Username?: unknown; Secret?: unknown };
          if (typeof r !== 'object' || r === null || typeof r.Username !== 'string' || typeof r.Secret !== 'string') {
            return reject(fail('answer lacks string Username and Secret'));
          }
          if (r.Username === '<token>') return resolve({ identityToken: r.Secret });
          resolve({ username: r.Username, password: r.Secret });
        });
      });
      child.stdin.end(serverUrl);
    });
  return attempt(0);
}
