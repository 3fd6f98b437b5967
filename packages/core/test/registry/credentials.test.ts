import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DockerConfigCredentials, ErrorCode, ImgstreamError, staticCredentials } from '@imgstream/core';

async function dir(t: { after(fn: () => unknown): void }): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'imgstream-creds-'));
  t.after(() => rm(d, { recursive: true, force: true }));
  return d;
}

/** Writes a docker-credential-<name> helper script that answers from a fixed table and logs its stdin. */
async function helper(d: string, name: string, table: Record<string, { Username: string; Secret: string }>, extra = ''): Promise<void> {
  const path = join(d, `docker-credential-${name}`);
  const cases = Object.entries(table)
    .map(([url, v]) => `  ${JSON.stringify(url)}) echo '${JSON.stringify({ ServerURL: url, ...v })}' ;;`)
    .join('\n');
  await writeFile(path, `#!/bin/sh\n${extra}\n[ "$1" = get ] || exit 2\nread -r url\necho "$url" >> "${d}/${name}.log"\ncase "$url" in\n${cases}\n  *) echo "credentials not found in native keychain"; exit 1 ;;\nesac\n`);
  await chmod(path, 0o755);
}

test('DockerConfigCredentials reads auths (base64 auth, username/password, identitytoken)', async (t) => {
  const d = await dir(t);
  const path = join(d, 'config.json');
  await writeFile(
    path,
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth: Buffer.from('hubuser:hub:pass').toString('base64') },
        'registry.example.com': { username: 'u', password: 'p' },
        'https://tok.example.com/v2/': { identitytoken: 'refresh-me' },
      },
    }),
  );
  const c = new DockerConfigCredentials({ path });
  assert.deepEqual(await c.get('docker.io'), { username: 'hubuser', password: 'hub:pass' });
  assert.deepEqual(await c.get('registry.example.com'), { username: 'u', password: 'p' });
  assert.deepEqual(await c.get('tok.example.com'), { identityToken: 'refresh-me' });
  assert.equal(await c.get('other.example.com'), undefined);
  assert.equal(await new DockerConfigCredentials({ path: join(d, 'missing.json') }).get('docker.io'), undefined);
});

test('DockerConfigCredentials runs credHelpers and credsStore helpers', async (t) => {
  const d = await dir(t);
  await helper(d, 'per-host', { 'ghcr.io': { Username: 'gh', Secret: 'gh-secret' } });
  await helper(d, 'store', { 'https://index.docker.io/v1/': { Username: '<token>', Secret: 'id-token' }, 'quay.io': { Username: 'q', Secret: 'qs' } });
  const path = join(d, 'config.json');
  await writeFile(path, JSON.stringify({ credHelpers: { 'ghcr.io': 'per-host' }, credsStore: 'store', auths: { 'fallback.io': { auth: Buffer.from('f:g').toString('base64') } } }));
  const c = new DockerConfigCredentials({ path, helperDirs: [d] });
  assert.deepEqual(await c.get('ghcr.io'), { username: 'gh', password: 'gh-secret' });
  assert.deepEqual(await c.get('docker.io'), { identityToken: 'id-token' });
  assert.deepEqual(await c.get('quay.io'), { username: 'q', password: 'qs' });
  // the store does not know it: auths is the fallback
  assert.deepEqual(await c.get('fallback.io'), { username: 'f', password: 'g' });
});

test('a failing or malformed credential helper is IMGSTREAM_CREDENTIAL_HELPER; a slow one times out', async (t) => {
  const d = await dir(t);
  const path = join(d, 'config.json');
  await writeFile(join(d, 'docker-credential-broken'), '#!/bin/sh\necho "boom" >&2\nexit 3\n', { mode: 0o755 });
  await writeFile(join(d, 'docker-credential-garbage'), '#!/bin/sh\ncat >/dev/null\necho "{not json"\n', { mode: 0o755 });
  await writeFile(join(d, 'docker-credential-slow'), '#!/bin/sh\nsleep 5\n', { mode: 0o755 });
  await writeFile(path, JSON.stringify({ credHelpers: { 'a.io': 'broken', 'b.io': 'garbage', 'c.io': 'slow', 'd.io': 'absent' } }));
  const c = new DockerConfigCredentials({ path, helperDirs: [d], helperTimeoutMs: 300 });
  const isHelperError = (re: RegExp) => (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.CREDENTIAL_HELPER && re.test(e.message);
  await assert.rejects(c.get('a.io'), isHelperError(/status 3: boom/));
  await assert.rejects(c.get('b.io'), isHelperError(/malformed JSON/));
  const started = Date.now();
  await assert.rejects(c.get('c.io'), isHelperError(/within 300 ms/));
  assert.ok(Date.now() - started < 3000);
  await assert.rejects(c.get('d.io'), isHelperError(/not found/));
});

test('a malformed config.json or auth entry is a coded error', async (t) => {
  const d = await dir(t);
  const path = join(d, 'config.json');
  await writeFile(path, '{ nope');
  await assert.rejects(new DockerConfigCredentials({ path }).get('x.io'), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.INVALID_OPTION);
  await writeFile(path, JSON.stringify({ auths: { 'x.io': { auth: Buffer.from('nocolon').toString('base64') } } }));
  await assert.rejects(new DockerConfigCredentials({ path }).get('x.io'), /malformed "auth"/);
  assert.throws(() => staticCredentials({ 'x.io': { username: 1 } as never }), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.INVALID_OPTION);
});
