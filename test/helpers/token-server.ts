import { execFile } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir, type Teardown } from './tmp.ts';

const run = promisify(execFile);

export interface TokenServerOptions {
  /** Users and their passwords; each gets `actions` (default pull + push) on every repository. */
  users?: Record<string, { password: string; actions?: string[] }>;
  /** Actions granted without credentials. Default: none. */
  anonymousActions?: string[];
  /** Signing algorithm. Default RS256. */
  algorithm?: 'RS256' | 'ES256';
  /** `expires_in` of issued tokens, seconds. Default 300. */
  expiresInSec?: number;
  /** Service name (the token audience). Default `imgstream-test-registry`. */
  service?: string;
}

export interface TokenRequestRecord {
  user: string | undefined;
  scopes: string[];
  granted: { type: string; name: string; actions: string[] }[];
  status: number;
}

export interface TokenServer {
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  readonly certPath: string;
  /** Every token request, in order. */
  readonly requests: TokenRequestRecord[];
  /** The YAML `auth:` section for docker-registry's config. */
  registryConfig(): string;
  stop(): Promise<void>;
}

/** libtrust's key ID (what docker-registry matches a JWT `kid` against): base32 of sha256(SPKI)[:30], groups of 4. */
export function libtrustKeyId(publicKey: KeyObject): string {
  const hash = createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of hash) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return (out.match(/.{4}/g) ?? []).join(':');
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/**
 * A small Docker token server (the distribution token auth spec): GET /token?service=&scope=
 * with optional Basic auth answers a JWT signed with a self-signed certificate's key, granting
 * the requested actions the user is allowed. docker-registry trusts it via `registryConfig()`.
 */
export async function startTokenServer(t: Teardown, options: TokenServerOptions = {}): Promise<TokenServer> {
  const dir = await tempDir(t, 'imgstream-token-');
  const algorithm = options.algorithm ?? 'RS256';
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  const keyArgs = algorithm === 'RS256' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  await run('openssl', ['req', '-x509', ...keyArgs, '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=imgstream-test-token']);
  const privateKey = createPrivateKey(await readFile(keyPath));
  const kid = libtrustKeyId(createPublicKey(privateKey));
  const service = options.service ?? 'imgstream-test-registry';
  const issuer = 'imgstream-test-issuer';
  const users = options.users ?? {};
  const anonymous = options.anonymousActions ?? [];
  const expiresIn = options.expiresInSec ?? 300;
  const requests: TokenRequestRecord[] = [];

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const finish = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname !== '/token') return finish(404, { error: 'not found' });
    let user: string | undefined;
    let allowed = anonymous;
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const m = /^Basic (.+)$/.exec(auth);
      const decoded = m ? Buffer.from(m[1] as string, 'base64').toString() : '';
      const colon = decoded.indexOf(':');
      const name = decoded.slice(0, colon);
      const entry = users[name];
      if (colon <= 0 || entry === undefined || entry.password !== decoded.slice(colon + 1)) {
        requests.push({ user: name, scopes: url.searchParams.getAll('scope'), granted: [], status: 401 });
        return finish(401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] });
      }
      user = name;
      allowed = entry.actions ?? ['pull', 'push'];
    }
    if (url.searchParams.get('service') !== service) return finish(400, { error: 'unknown service' });
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' '));
    const access = [];
    for (const scope of scopes) {
      const parts = scope.split(':');
      if (parts.length < 3) continue;
      const type = parts[0] as string;
      const actions = (parts[parts.length - 1] as string).split(',');
      const name = parts.slice(1, -1).join(':');
      const granted = actions.filter((a) => allowed.includes(a));
      if (type === 'repository' && granted.length > 0) access.push({ type, name, actions: granted });
    }
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: algorithm, kid };
    const claims = { iss: issuer, sub: user ?? '', aud: service, exp: now + expiresIn, nbf: now - 5, iat: now, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = algorithm === 'RS256' ? sign('sha256', Buffer.from(input), privateKey) : sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    const token = `${input}.${b64url(signature)}`;
    requests.push({ user, scopes, granted: access, status: 200 });
    finish(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date(now * 1000).toISOString() });
  };

  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('token server has no port');
  const realm = `http://127.0.0.1:${addr.port}/token`;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.after(stop);
  return {
    realm,
    service,
    issuer,
    certPath,
    requests,
    registryConfig: () =>
      ['auth:', '  token:', `    realm: ${realm}`, `    service: ${service}`, `    issuer: ${issuer}`, `    rootcertbundle: ${certPath}`].join('\n'),
    stop,
  };
}
