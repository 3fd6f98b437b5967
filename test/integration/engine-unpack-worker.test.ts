// The layer downloader's unpack worker (unpackInWorker, the default): errors come back with the codes,
// messages and fields of the inline path; abort and close() stop the worker thread; a worker that
// crashes is a coded error, not a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, ImgstreamError, LayerCache, LayerDownloader, sha256Digest, type Digest } from '@imgstream/core';
import { unpackLayerBlobInWorker } from '../../packages/core/src/download/unpack-worker-client.ts';
import { httpRangeReader, httpStreamOpener, startRangeServer } from '../helpers/range-server.ts';
import { buildTar, gzip, pseudoRandom, type TarEntrySpec } from '../helpers/tar-builder.ts';
import { tempDir } from '../helpers/tmp.ts';

/** OS threads of this process (a worker thread is one; the thread pool and V8's threads stay put). */
const threads = (): number => readdirSync('/proc/self/task').length;

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function slowLayer(seed: number) {
  // incompressible, so the blob is ~4 MiB and takes ~4 s at 1 MiB/s
  const tar = Buffer.from(buildTar([{ name: 'big', type: 'file', content: pseudoRandom(4 * 1024 * 1024, seed) }]));
  const blob = Buffer.from(gzip(tar, 1));
  return { blob, digest: sha256Digest(blob), diffId: sha256Digest(tar) };
}

test('abort of a download and close() stop its unpack worker thread and remove the staging directory', async (t) => {
  const cacheDir = await tempDir(t);
  const layerCache = new LayerCache({ layerCacheDir: cacheDir });
  const downloader = new LayerDownloader({ layerCache });
  t.after(() => downloader.close());
  // warm up (thread pool, loader threads), so the count below only moves with the worker
  const small = Buffer.from(gzip(buildTar([{ name: 'a', type: 'file', content: 'a' }])));
  const warm = await startRangeServer(t, small);
  await downloader.download({ digest: sha256Digest(small), source: httpStreamOpener(warm.url) });
  const base = threads();

  const fx = slowLayer(1);
  const server = await startRangeServer(t, fx.blob, { bytesPerSecond: 1024 * 1024 });
  const quitter = new AbortController();
  let progress = 0;
  downloader.on('progress', () => progress++);
  const p = downloader.download({ digest: fx.digest, diffId: fx.diffId, source: httpStreamOpener(server.url) }, { signal: quitter.signal });
  await until('the worker thread and some progress', () => threads() > base && progress >= 2);
  const reason = new Error('not wanted');
  quitter.abort(reason);
  await assert.rejects(p, (e) => e === reason);
  await until('the download to stop', () => downloader.pending.length === 0);
  await downloader.close(); // resolves once every download, also an abandoned one, has stopped
  assert.equal(threads(), base, 'the worker thread has exited');
  assert.deepEqual(await readdir(join(cacheDir, '.staging')), []);
  assert.equal(layerCache.has(fx.digest), false);
});

test('close() mid-download: the download rejects with IMGSTREAM_CLOSED, close() resolves with no thread left', async (t) => {
  const cacheDir = await tempDir(t);
  const layerCache = new LayerCache({ layerCacheDir: cacheDir });
  const warmup = new LayerDownloader({ layerCache });
  const small = Buffer.from(gzip(buildTar([{ name: 'a', type: 'file', content: 'a' }])));
  const warm = await startRangeServer(t, small);
  await warmup.download({ digest: sha256Digest(small), source: httpStreamOpener(warm.url) });
  await warmup.close();
  const base = threads();

  const downloader = new LayerDownloader({ layerCache });
  const fx = slowLayer(2);
  const server = await startRangeServer(t, fx.blob, { bytesPerSecond: 1024 * 1024 });
  let progress = 0;
  downloader.on('progress', () => progress++);
  const p = downloader.download({ digest: fx.digest, source: httpStreamOpener(server.url) });
  await until('the worker thread and some progress', () => threads() > base && progress >= 2);
  const started = performance.now();
  await downloader.close();
  const closeMs = performance.now() - started;
  await assert.rejects(p, (e) => e instanceof ImgstreamError && e.code === ErrorCode.CLOSED);
  assert.equal(threads(), base, 'the worker thread has exited');
  assert.ok(closeMs < 2_000, `close() took ${closeMs.toFixed(0)} ms`);
  assert.deepEqual(await readdir(join(cacheDir, '.staging')), []);
  await assert.rejects(downloader.download({ digest: fx.digest, source: httpStreamOpener(server.url) }), (e) => e instanceof ImgstreamError && e.code === ErrorCode.CLOSED);
});

test('a process that closes its downloader mid-download exits by itself (nothing left running)', { timeout: 60_000 }, async (t) => {
  const fx = slowLayer(3);
  const server = await startRangeServer(t, fx.blob, { bytesPerSecond: 1024 * 1024 });
  const cacheDir = await tempDir(t);
  const root = new URL('../..', import.meta.url).pathname;
  const child = spawn(
    process.execPath,
    ['--conditions=imgstream-source', '--import', 'tsx', join(root, 'test/helpers/download-child.ts'), cacheDir, server.url, fx.digest, String(fx.blob.byteLength), 'close-at-progress=3'],
    { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (s: string) => (out += s));
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  assert.deepEqual(exit, { code: 0, signal: null }, out);
  assert.match(out, /^closed$/m);
  assert.match(out, /^rejected IMGSTREAM_CLOSED$/m);
  assert.deepEqual(await readdir(join(cacheDir, '.staging')), []);
});

test('through the worker, failures have the codes, messages and fields of the inline path', async (t) => {
  const failure = async (unpackInWorker: boolean, blob: Buffer, extra: { digest?: Digest; diffId?: Digest } = {}): Promise<ImgstreamError> => {
    const cacheDir = await tempDir(t);
    const downloader = new LayerDownloader({ layerCache: new LayerCache({ layerCacheDir: cacheDir }), fetchRetries: 0, unpackInWorker });
    t.after(() => downloader.close());
    const server = await startRangeServer(t, blob);
    const digest = extra.digest ?? sha256Digest(blob);
    const err = await downloader.download({ digest, ...(extra.diffId ? { diffId: extra.diffId } : {}), source: httpRangeReader(server.url, blob.byteLength) }).then(
      () => assert.fail('the download succeeded'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ImgstreamError, String(err));
    assert.deepEqual(await readdir(join(cacheDir, '.staging')), []);
    return err;
  };
  const ok = Buffer.from(gzip(buildTar([{ name: 'etc/passwd', type: 'file', content: 'root:x:0:0::/root:/bin/sh\n' }, { name: 'x', type: 'file', content: pseudoRandom(200_000, 4) }])));
  const corrupt = Buffer.from(ok);
  for (const i of [corrupt.byteLength >> 1, (corrupt.byteLength >> 1) + 1]) corrupt[i] = corrupt[i]! ^ 0xff;
  const tarOf = (entries: TarEntrySpec[]) => Buffer.from(buildTar(entries));
  const truncated = tarOf([{ name: 'f', type: 'file', content: pseudoRandom(10_000, 5) }]).subarray(0, 3_000);
  const cases: Array<[string, Buffer, { digest?: Digest; diffId?: Digest }, string]> = [
    ['corrupt gzip', corrupt, {}, ErrorCode.CORRUPT_DATA],
    ['.. in a name', Buffer.from(gzip(tarOf([{ name: '../evil', type: 'file', content: 'x' }]))), {}, ErrorCode.UNSAFE_PATH],
    ['write through a symlink', tarOf([{ name: 'etc', type: 'symlink', target: '/etc' }, { name: 'etc/passwd', type: 'file', content: 'pwned' }]), {}, ErrorCode.UNSAFE_PATH],
    ['truncated tar', truncated, {}, ErrorCode.INVALID_TAR],
    ['wrong blob digest', ok, { digest: sha256Digest('other') }, ErrorCode.DIGEST_MISMATCH],
    ['wrong diff ID', ok, { diffId: sha256Digest('other') }, ErrorCode.DIGEST_MISMATCH],
  ];
  for (const [what, blob, extra, code] of cases) {
    const inline = await failure(false, blob, extra);
    const worker = await failure(true, blob, extra);
    assert.equal(inline.code, code, what);
    assert.deepEqual(
      { code: worker.code, message: worker.message, fields: worker.fields },
      { code: inline.code, message: inline.message, fields: inline.fields },
      what,
    );
    assert.deepEqual(worker.toJSON(), inline.toJSON(), `${what}: toJSON, cause included`);
  }
});

test('an unpack worker that crashes, exits without an answer or cannot start is IMGSTREAM_TOOL_FAILED, not a hang', async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  await mkdir(root);
  const blob = Buffer.from(gzip(buildTar([{ name: 'a', type: 'file', content: pseudoRandom(3_000_000, 6) }])));
  const options = { digest: sha256Digest(blob), root, scratchDir: dir, signal: new AbortController().signal };
  const source = async function* () {
    for (let i = 0; i < blob.byteLength; i += 64 * 1024) yield blob.subarray(i, i + 64 * 1024);
  };
  const entries: Array<[string, URL, RegExp]> = [
    ['throws', new URL(`data:text/javascript,${encodeURIComponent("throw new Error('boom')")}`), /unpack worker failed: boom/],
    ['exits', new URL(`data:text/javascript,${encodeURIComponent('process.exit(3)')}`), /exited with code 3 without a result/],
    ['missing', new URL('./no-such-unpack-worker.js', import.meta.url), /unpack worker failed/],
  ];
  for (const [what, entry, message] of entries) {
    await assert.rejects(unpackLayerBlobInWorker(source(), options, entry), (e: unknown) => {
      assert.ok(e instanceof ImgstreamError, what);
      assert.equal(e.code, ErrorCode.TOOL_FAILED, what);
      assert.equal(e.fields.tool, 'unpack-worker', what);
      assert.match(e.message, message, what);
      return true;
    });
  }
});
