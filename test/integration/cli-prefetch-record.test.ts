import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ImageStreamer, RegistryClient, fetchPrefetchReport, indexImage, parsePrefetchReport, parseReference, type Digest } from '@imgstream/core';
import { startRegistry } from '../helpers/registry.ts';
import { pushTreeImage } from '../helpers/image-builder.ts';
import type { TreeEntry as LayerEntry } from '../helpers/tar-builder.ts';
import { tempDir } from '../helpers/tmp.ts';

const run = promisify(execFile);
const MAIN = resolve(fileURLToPath(import.meta.url), '../../../packages/cli/src/main.ts');
const cli = (...args: string[]) => run(process.execPath, ['--conditions=imgstream-source', '--import', 'tsx', MAIN, ...args], { maxBuffer: 64 << 20, timeout: 60_000 });

test('imgstream prefetch record REF -- CMD: runs CMD in the streamed image, writes and pushes the report of the blocks it read', { timeout: 120_000 }, async (t) => {
  const registry = await startRegistry(t);
  const app: Record<string, LayerEntry> = {};
  for (let i = 0; i < 24; i++) app[`app/m${i}.txt`] = randomBytes(72 * 1024).toString('base64');
  const image = await pushTreeImage(registry.url, 'cli-prefetch:1', [{ 'bin/busybox': { copyFrom: '/usr/bin/busybox' }, tmp: { dir: true } }, app]);
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  await indexImage(client, parseReference(image.ref), { spanBytes: 128 * 1024 });
  const dir = await tempDir(t, 'imgstream-cli-prefetch-');
  const out = join(dir, 'report.json');
  const { stdout, stderr } = await cli('prefetch', 'record', '--plain-http', '--quiet-ms', '1500', '-o', out, '--push', image.ref, '--', '/bin/busybox', 'sh', '-c', 'test -e /app/m5.txt; /bin/busybox cat /app/m3.txt /app/m20.txt /app/nope.txt').catch((err: { stdout: string; stderr: string }) => err);
  // cat fails on the missing file, after reading the two others
  assert.match(stderr, /recorded \d+ blocks in \d+ ranges of 2 layers, \d+ absent paths, \d+ looked up \(command exited 1\)/);
  const report = parsePrefetchReport(await readFile(out));
  assert.equal(report.manifestDigest, image.manifestDigest);
  assert.deepEqual(report.layers.map((l) => l.digest), image.layerDigests);
  // the lookups in vain: the missing file in the top layer, `app` in the bottom one (overlayfs asks each)
  assert.ok(report.absent?.some((a) => a.layer === 1 && a.path === 'app/nope.txt'), JSON.stringify(report.absent));
  assert.ok(report.absent?.some((a) => a.layer === 0 && a.path === 'app'), JSON.stringify(report.absent));
  // the paths it found without reading them (`test -e`), not those it read
  assert.ok(report.looked?.some((a) => a.layer === 1 && a.path === 'app/m5.txt'), JSON.stringify(report.looked));
  assert.ok(!report.looked?.some((a) => a.path === 'app/m3.txt' || a.path === 'bin/busybox'), JSON.stringify(report.looked));

  // the recorded blocks are exactly those of busybox's reads and the two files (plus what busybox touched)
  const streamer = new ImageStreamer({ registry: client, layerCacheDir: join(dir, 'layers'), imagesInUsePath: join(dir, 'in-use.json'), backgroundDownloads: false });
  t.after(() => streamer.close());
  const top = await streamer.openLayer({ imageRef: image.ref, layerDigest: image.layerDigests[1]! });
  const blocksOf = (path: string) => new Set(top.index.entries.get(path)!.extents!.map((e) => e.block));
  const recordedTop = new Set(report.ranges.filter((r) => r.layer === 1).flatMap((r) => Array.from({ length: r.count }, (_, i) => r.first + i)));
  assert.deepEqual(recordedTop, new Set([...blocksOf('app/m3.txt'), ...blocksOf('app/m20.txt')]));
  assert.ok(report.ranges.some((r) => r.layer === 0), 'busybox was read from the bottom layer');
  // pushed: the artifact digest on stdout, the same report from the registry, with its pack (the
  // file ranges read, widened: the two files whole, and busybox's pieces)
  assert.match(stdout.trim(), /^sha256:[0-9a-f]{64}$/);
  const { pack, ...pushed } = (await fetchPrefetchReport(client, parseReference(image.ref), image.manifestDigest as Digest))!;
  assert.deepEqual(pushed, report);
  assert.ok(pack !== undefined, 'pushed with a pack');
  const decoded = pack.members.reduce((n, m) => n + m.decodedSize, 0);
  const files = ['app/m3.txt', 'app/m20.txt'].reduce((n, p) => n + top.index.entries.get(p)!.size, 0);
  assert.ok(decoded >= files, `pack of ${decoded} bytes for ${files} bytes of the two files`);
});
