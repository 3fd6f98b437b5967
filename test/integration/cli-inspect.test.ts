import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MediaType, RegistryClient, parseReference, type ImageIndex } from '@imgstream/core';
import { startBasicAuthRegistry, startRegistry } from '../helpers/registry.ts';
import { tempDir } from '../helpers/tmp.ts';
import { pushTinyImage } from '../helpers/registry-image.ts';

const root = new URL('../..', import.meta.url).pathname;

async function imgstream(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      ['--conditions=imgstream-source', '--import', 'tsx', join(root, 'packages/cli/src/main.ts'), ...args],
      { cwd: root, env: { ...process.env, ...env }, timeout: 60_000 },
    );
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test('imgstream inspect prints digest, platform and layers (text and --json, index with --platform)', async (t) => {
  const reg = await startRegistry(t);
  const c = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => c.close());
  const amd = await pushTinyImage(c, `${reg.host}/cli/app:amd64`, { layers: [[{ path: 'a', content: 'one' }], [{ path: 'b', content: 'two' }]] });
  const arm = await pushTinyImage(c, `${reg.host}/cli/app:arm`, { platform: { os: 'linux', architecture: 'arm', variant: 'v7' } });
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests: [
      { mediaType: MediaType.OCI_MANIFEST, digest: amd.digest, size: amd.manifestBytes.length, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: MediaType.OCI_MANIFEST, digest: arm.digest, size: arm.manifestBytes.length, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
    ],
  };
  const idx = await c.pushManifest(parseReference(`${reg.host}/cli/app:multi`), index);

  const text = await imgstream(['inspect', '--plain-http', '--platform', 'linux/amd64', `${reg.host}/cli/app:amd64`]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`Digest: +${amd.digest}`));
  assert.match(text.stdout, /Platform: +linux\/amd64/);
  for (const l of amd.manifest.layers) assert.match(text.stdout, new RegExp(`${l.digest}  ${l.mediaType.replace(/[.+]/g, '\\$&')} +${l.size}`));

  const json = await imgstream(['inspect', '--plain-http', '--json', '--platform', 'linux/arm/v7', `${reg.host}/cli/app:multi`]);
  assert.equal(json.code, 0, json.stderr);
  const doc = JSON.parse(json.stdout) as { digest: string; indexDigest: string; platform: string; layers: { digest: string; mediaType: string; size: number }[] };
  assert.equal(doc.digest, arm.digest);
  assert.equal(doc.indexDigest, idx.digest);
  assert.equal(doc.platform, 'linux/arm/v7');
  assert.deepEqual(doc.layers, arm.manifest.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size })));
});

test('imgstream inspect: coded errors, and credentials from a Docker config.json', async (t) => {
  const reg = await startBasicAuthRegistry(t, { bob: 'hunter2' });
  const c = new RegistryClient({ plainHttpLoopback: true, credentials: { [reg.host]: { username: 'bob', password: 'hunter2' } } });
  t.after(() => c.close());
  const img = await pushTinyImage(c, `${reg.host}/private/app:v1`);
  const dir = await tempDir(t);
  await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from('bob:hunter2').toString('base64') } } }));
  const ok = await imgstream(['inspect', '--plain-http', '--json', '--platform', 'linux/amd64', `${reg.host}/private/app:v1`], { DOCKER_CONFIG: dir });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal((JSON.parse(ok.stdout) as { digest: string }).digest, img.digest);
  const empty = await tempDir(t);
  const denied = await imgstream(['inspect', '--plain-http', `${reg.host}/private/app:v1`], { DOCKER_CONFIG: empty });
  assert.equal(denied.code, 2);
  assert.match(denied.stderr, /IMGSTREAM_REGISTRY_UNAUTHORIZED/);
  const bad = await imgstream(['inspect', 'Not A Ref']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /IMGSTREAM_INVALID_REFERENCE/);
  const missing = await imgstream(['inspect', '--plain-http', `${reg.host}/private/app:nope`], { DOCKER_CONFIG: dir });
  assert.match(missing.stderr, /IMGSTREAM_REGISTRY_NOT_FOUND/);
});
