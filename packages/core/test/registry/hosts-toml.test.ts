import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, ImgstreamError, loadHostsDir, parseHostsToml } from '@imgstream/core';

const sample = `
# mirrors for docker.io
server = "https://registry-1.docker.io"

[host."https://mirror-a.example.com"]
  capabilities = ["pull", "resolve"]   # both
  skip_verify = false

[host."http://127.0.0.1:5001/prefix/v2"]
  capabilities = ['pull']
  override_path = true
  [host."http://127.0.0.1:5001/prefix/v2".header]
    x-custom = "ignored # not a comment"
`;

test('parseHostsToml reads server and ordered mirrors with capabilities and override_path', () => {
  const c = parseHostsToml(sample);
  assert.equal(c.server, 'https://registry-1.docker.io');
  assert.deepEqual(c.mirrors, [
    { url: 'https://mirror-a.example.com', capabilities: ['pull', 'resolve'] },
    { url: 'http://127.0.0.1:5001/prefix/v2', capabilities: ['pull'], overridePath: true },
  ]);
});

test('parseHostsToml rejects malformed files with the line number', () => {
  const bad = ['[host."ftp://x"]', '[host."https://x"]\ncapabilities = ["fly"]', 'what', '[other]', '[host."https://x"]\noverride_path = "yes"', 'server = 5'];
  for (const text of bad) {
    assert.throws(() => parseHostsToml(text, 'h.toml'), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.INVALID_OPTION && /h\.toml:\d+/.test(e.message), text);
  }
});

test('loadHostsDir maps certs.d directories to the mirrors option', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'imgstream-certsd-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'docker.io'));
  await writeFile(join(dir, 'docker.io', 'hosts.toml'), sample);
  await mkdir(join(dir, 'localhost_5000'));
  await writeFile(join(dir, 'localhost_5000', 'hosts.toml'), '[host."http://127.0.0.1:6000"]\n');
  await mkdir(join(dir, 'empty.io'));
  const m = await loadHostsDir(dir);
  assert.deepEqual(Object.keys(m).sort(), ['docker.io', 'localhost:5000']);
  assert.equal(m['docker.io']?.length, 2);
  assert.deepEqual(m['localhost:5000'], [{ url: 'http://127.0.0.1:6000' }]);
});
