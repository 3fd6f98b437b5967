import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { indexImage, parseReference, RegistryClient } from '@imgstream/core';
import type { TreeEntry as LayerEntry } from '../helpers/tar-builder.ts';
import { startRegistry } from '../helpers/registry.ts';
import { pushTreeImage } from '../helpers/image-builder.ts';
import { makeLab, startContainerd } from '../helpers/containerd.ts';
import { startImgstreamd } from '../helpers/imgstreamd.ts';
import { tempDir } from '../helpers/tmp.ts';

const metric = (text: string, name: string): number =>
  text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);

test('imgstreamd prefetch with a real containerd: the first node records the start-up reads, a fresh node replays them and serves them from the cache', { timeout: 240_000 }, async (t) => {
  const registry = await startRegistry(t);
  const app: Record<string, LayerEntry> = {};
  const contents = new Map<string, string>();
  for (let i = 0; i < 36; i++) {
    const s = randomBytes(72 * 1024).toString('base64');
    app[`app/m${i}.txt`] = s;
    contents.set(`/app/m${i}.txt`, s);
  }
  const image = await pushTreeImage(registry.url, 'prefetch-e2e:1', [{ 'bin/busybox': { copyFrom: '/usr/bin/busybox' }, tmp: { dir: true } }, app]);
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  await indexImage(client, parseReference(image.ref), { spanBytes: 128 * 1024 });
  const files = [...contents.keys()].filter((_, i) => i % 3 === 0);
  const expected = files.map((f) => `${createHash('sha256').update(contents.get(f)!).digest('hex')}  ${f}\n`).join('');
  const reportDir = await tempDir(t, 'imgstreamd-prefetch-reports-');
  const flags = [`--prefetch_report_dir=${reportDir}`, '--prefetch_quiet=1500ms', '--prefetch_record_max=6s'];

  const runNode = async (name: string, extra: string[]) => {
    const lab = await makeLab(t, `imgstreamd-prefetch-${name}-`);
    const daemon = await startImgstreamd(lab, [...flags, ...extra]);
    const ctd = await startContainerd(lab, { proxySnapshotters: { imgstream: daemon.socket } });
    await ctd.ctr(['images', 'rpull', '--plain-http', '--snapshotter', 'imgstream', image.ref], { binary: 'ctr-remote', timeoutMs: 120_000 });
    const run = await ctd.ctr(['run', '--rm', '--snapshotter', 'imgstream', image.ref, `prefetch-${name}`, '/bin/busybox', 'sha256sum', ...files], { timeoutMs: 120_000 });
    assert.equal(run.stdout, expected, `${name}: ${run.stderr}\n${daemon.log().slice(-4000)}`);
    return daemon;
  };

  // node 1: no report -> recorded after the workload goes quiet, in the report dir. Background
  // downloads off: a container created after its layers completed reads their local directories
  // directly (overlay lower dirs), which the recording cannot see (docs/prefetch.md).
  const a = await runNode('a', ['--background_downloads=false']);
  assert.ok(a.records().some((r) => r.msg === 'no prefetch report: recording this start'));
  const rec = await a.waitFor((r) => r.msg === 'prefetch report recorded', { timeoutMs: 20_000 });
  assert.ok(Number(rec.blocks) >= files.length, `recorded ${String(rec.blocks)} blocks`);
  assert.deepEqual((await readdir(reportDir)).filter((f) => f.endsWith('.json')).length, 1);
  const foregroundA = metric(await a.metrics(), 'imgstream_fetch_latency_seconds_count{priority="foreground"}');
  await a.stop();

  // node 2: fresh caches and containerd, same report -> replay, reads hit the cache
  // (background downloads off: reads of complete local layers would not show as hits or misses)
  const b = await runNode('b', ['--background_downloads=false']);
  assert.ok(b.records().some((r) => r.msg === 'prefetch report found: fetching the start-up working set first'));
  const done = await b.waitFor((r) => r.msg === 'prefetch done', { timeoutMs: 20_000 });
  assert.equal(done.failedBatches, 0);
  const stats = await b.waitFor((r) => r.msg === 'prefetch hits and misses of the start-up window', { timeoutMs: 20_000 });
  const hits = Number(stats.hits);
  const misses = Number(stats.misses);
  const m = await b.metrics();
  const foregroundB = metric(m, 'imgstream_fetch_latency_seconds_count{priority="foreground"}');
  t.diagnostic(`node a: ${foregroundA} foreground fetches; node b: ${foregroundB}, hits ${hits}, misses ${misses}, ${String(done.bytes)} bytes prefetched`);
  assert.ok(hits / (hits + misses) > 0.9, `hit ratio ${hits}/${hits + misses}`);
  // node a fetched on demand; node b finds the recorded blocks in the cache
  assert.ok(foregroundB <= Number(rec.blocks) / 10, `node b: ${foregroundB} foreground fetches for ${String(rec.blocks)} recorded blocks`);
  // the report's pack was replayed: the file ranges read, each first read a hit (of a range)
  assert.ok(Number(done.packBytes) > 0 && Number(done.packRanges) >= files.length, `pack: ${String(done.packBytes)} bytes, ${String(done.packRanges)} ranges`);
  assert.ok(hits >= files.length, `${hits} hits for ${files.length} files`);
  assert.equal((await readdir(reportDir)).filter((f) => f.endsWith('.pack')).length, 1, 'the pack is kept beside the report');
  assert.equal(metric(m, 'imgstream_prefetch_reports_total{status="found"}'), 1);
  assert.equal(metric(m, 'imgstream_prefetch_first_reads_total{result="hit"}'), hits);
  assert.ok(metric(m, 'imgstream_prefetched_bytes_total') > 0);
  // the report carries the file ranges read, and node b read them into the page cache ahead of the container
  const report = JSON.parse(await readFile(String(rec.path), 'utf8')) as { files?: Array<[number, string, number, number]> };
  for (const f of files) assert.ok(report.files?.some(([, path]) => `/${path}` === f), `${f} is in the report's files`);
  const warmed = await b.waitFor((r) => r.msg === 'page cache warmed with the prefetched files', { timeoutMs: 20_000 });
  assert.equal(warmed.errors, 0);
  assert.ok(Number(warmed.files) >= files.length, `warmed ${String(warmed.files)} files`);
  assert.ok(Number(warmed.bytes) >= files.length * 96 * 1024, `warmed ${String(warmed.bytes)} bytes`);
});
