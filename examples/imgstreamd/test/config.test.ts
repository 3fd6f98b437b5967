import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseBytes, parseDurationMs, resolveConfig } from 'imgstreamd';

test('flags have GKE names and defaults', async () => {
  const c = await resolveConfig({});
  assert.equal(c.mountPoint, '/run/imgstream/mnt');
  assert.equal(c.socket, '/run/imgstream/snapshotter.sock');
  assert.equal(c.maxContentCacheBytes, 1024 * 1024 * 1024);
  assert.equal(c.maxReadBlocks, 2);
  assert.equal(c.readAheadBytes, 1024 * 1024);
  assert.equal(c.maxLayerDownloads, 3);
  assert.equal(c.gcPeriodMs, 180_000);
  assert.equal(c.enablePrefetching, true);
  assert.equal(c.prefetchWaitMs, 1000);
  assert.equal(c.prefetchBudgetBytes, 256 * 1024 * 1024);
  assert.equal(c.metricsAddress, '127.0.0.1:9880');
  assert.equal(c.eventReporterType, 'none');
  assert.equal(c.logFormatter, 'text');
});

test('sizes and durations', () => {
  assert.equal(parseBytes('1MiB'), 1 << 20);
  assert.equal(parseBytes('512KiB'), 512 << 10);
  assert.equal(parseBytes('4096'), 4096);
  assert.throws(() => parseBytes('1 lots'));
  assert.equal(parseDurationMs('3m'), 180_000);
  assert.equal(parseDurationMs('1h30m'), 5_400_000);
  assert.equal(parseDurationMs('250ms'), 250);
  assert.equal(parseDurationMs('1500'), 1500);
  assert.throws(() => parseDurationMs('3 minutes'));
});

test('the config file is read, flags win, bad values name the flag', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'imgstreamd-config-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'c.json');
  await writeFile(file, JSON.stringify({ max_read_ahead: '2MiB', gc_period: '30s', plain_http_registries: ['r.local:5000'], max_content_cache_size_mb: 64 }));
  const c = await resolveConfig({ gc_period: '1m' }, file);
  assert.equal(c.readAheadBytes, 2 << 20);
  assert.equal(c.gcPeriodMs, 60_000);
  assert.deepEqual(c.plainHttpRegistries, ['r.local:5000']);
  assert.equal(c.maxContentCacheBytes, 64 << 20);
  await assert.rejects(resolveConfig({ max_read_blocks: 'two' }), /max_read_blocks/);
  await assert.rejects(resolveConfig({ log_formatter: 'xml' }), /log_formatter/);
  assert.equal((await resolveConfig({})).prefetchPageCacheReaders, 4);
  assert.equal((await resolveConfig({ prefetch_page_cache_readers: '2' })).prefetchPageCacheReaders, 2);
  for (const bad of ['0', '65', 'two']) await assert.rejects(resolveConfig({ prefetch_page_cache_readers: bad }), /prefetch_page_cache_readers/);
  assert.equal((await resolveConfig({})).prefetchPageCacheMaxFileBytes, 4 << 20);
  assert.equal((await resolveConfig({ prefetch_page_cache_max_file: '0' })).prefetchPageCacheMaxFileBytes, 0);
  await assert.rejects(resolveConfig({ prefetch_page_cache_max_file: 'big' }), /prefetch_page_cache_max_file/);
  await assert.rejects(resolveConfig({ mount_point: 'relative' }), /mount_point/);
  await writeFile(file, JSON.stringify({ no_such_flag: 1 }));
  await assert.rejects(resolveConfig({}, file), /no_such_flag/);
});
