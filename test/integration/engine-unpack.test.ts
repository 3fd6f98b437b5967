import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, ImgstreamError, LayerCache, LayerDownloader, sha256Digest, type Digest } from '@imgstream/core';
import { httpRangeReader, httpStreamOpener, startRangeServer } from '../helpers/range-server.ts';
import { buildTar, gzip, pseudoRandom, type TarEntrySpec } from '../helpers/tar-builder.ts';
import { tempDir } from '../helpers/tmp.ts';

const T = 1_650_000_000;
const binary = Buffer.from([0x00, 0xff, 0x01, 0x80, 0x7f]);

const ENTRIES: TarEntrySpec[] = [
  { name: './', type: 'dir', mode: 0o755, mtime: T },
  { name: 'etc/', type: 'dir', mode: 0o755, mtime: T },
  { name: 'etc/passwd', type: 'file', content: 'root:x:0:0::/root:/bin/sh\n', mode: 0o644, mtime: 1_651_000_000 },
  { name: 'usr/bin/su', type: 'file', content: 'SU', mode: 0o4755, mtime: T },
  { name: 'usr/bin/su-link', type: 'hardlink', target: 'usr/bin/su' },
  { name: 'tmp/', type: 'dir', mode: 0o1777, mtime: T },
  { name: 'home/user/', type: 'dir', mode: 0o700, uid: 1000, gid: 1000, mtime: T },
  { name: 'home/user/notes', type: 'file', content: 'n', mode: 0o2640, uid: 1000, gid: 1001, mtime: T },
  { name: 'bin/busybox', type: 'file', content: 'BB', mode: 0o755, pax: { 'SCHILY.xattr.user.comment': 'hello world', 'LIBARCHIVE.xattr.trusted.bin': binary.toString('base64') } },
  { name: 'bin/sh', type: 'symlink', target: 'busybox', mtime: T },
  { name: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
  { name: 'dev/loop9', type: 'block', devMajor: 7, devMinor: 9, mode: 0o660, gid: 6 },
  { name: 'run/fifo', type: 'fifo', mode: 0o600 },
  { name: 'var/.wh.old', type: 'file', content: '' },
  { name: 'var/.wh.gone', type: 'file', content: '' },
  { name: 'opt/.wh..wh..opq', type: 'file', content: '' },
  { name: 'opt/keep', type: 'file', content: 'k' },
  { name: 'big/data', type: 'file', content: pseudoRandom(3 * 1024 * 1024 + 17, 5) },
];

async function layerFixture(entries = ENTRIES): Promise<{ tar: Buffer; blob: Buffer; digest: Digest; diffId: Digest }> {
  const tar = Buffer.from(buildTar(entries));
  const blob = Buffer.from(gzip(tar));
  return { tar, blob, digest: sha256Digest(blob), diffId: sha256Digest(tar) };
}

/** Mounts something on a fresh dir; the same teardown unmounts and then removes the dir. */
async function mountOn(t: { after(fn: () => unknown): void }, args: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'imgstream-mnt-'));
  execFileSync('mount', [...args, dir]);
  t.after(async () => {
    execFileSync('umount', ['-l', dir]);
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

function xattrs(path: string): Record<string, string> {
  const out = execFileSync('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', path], { encoding: 'utf8' });
  const map: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([^#=][^=]*)=(.*)$/.exec(line);
    if (m) map[m[1]!] = m[2]!;
  }
  return map;
}

// unpackInWorker (the default) and on the calling thread: the same layer, errors and clean-up
for (const unpackInWorker of [true, false]) {
  test(`a gzip layer is verified and unpacked as an overlayfs lowerdir: modes, owners, times, xattrs, links, devices, whiteouts (unpackInWorker: ${unpackInWorker})`, async (t) => {
    const fx = await layerFixture();
    const server = await startRangeServer(t, fx.blob);
    const cacheDir = await tempDir(t);
    const layerCache = new LayerCache({ layerCacheDir: cacheDir });
    const downloader = new LayerDownloader({ layerCache, unpackInWorker });
    t.after(() => downloader.close());
    const completes: string[] = [];
    layerCache.on('complete', (e) => completes.push(e.dir));
    const dir = await downloader.download({ digest: fx.digest, diffId: fx.diffId, size: fx.blob.byteLength, source: httpStreamOpener(server.url) });
    assert.deepEqual(completes, [dir]);
    assert.equal(layerCache.record(fx.digest)?.diffId, fx.diffId);

    const st = async (p: string) => lstat(join(dir, p));
    assert.equal((await readFile(join(dir, 'etc/passwd'), 'utf8')), 'root:x:0:0::/root:/bin/sh\n');
    assert.equal((await st('etc/passwd')).mtimeMs, 1_651_000_000_000);
    assert.equal((await st('usr/bin/su')).mode & 0o7777, 0o4755);
    assert.equal((await st('tmp')).mode & 0o7777, 0o1777);
    assert.equal((await st('tmp')).mtimeMs, T * 1000);
    const home = await st('home/user');
    assert.deepEqual([home.mode & 0o7777, home.uid, home.gid], [0o700, 1000, 1000]);
    const notes = await st('home/user/notes');
    assert.deepEqual([notes.mode & 0o7777, notes.uid, notes.gid], [0o2640, 1000, 1001]);
    assert.equal((await st('usr/bin/su')).ino, (await st('usr/bin/su-link')).ino, 'hard link shares the inode');
    assert.equal(await readlink(join(dir, 'bin/sh')), 'busybox');
    assert.equal((await st('bin/sh')).mtimeMs, T * 1000);
    const x = xattrs(join(dir, 'bin/busybox'));
    assert.equal(x['user.comment'], '0x' + Buffer.from('hello world').toString('hex'));
    assert.equal(x['trusted.bin'], '0x' + binary.toString('hex'));
    const nul = await st('dev/null');
    assert.ok(nul.isCharacterDevice());
    assert.equal(nul.rdev, (1 << 8) | 3);
    assert.equal(nul.mode & 0o7777, 0o666);
    const loop = await st('dev/loop9');
    assert.ok(loop.isBlockDevice());
    assert.equal(loop.rdev, (7 << 8) | 9);
    assert.equal(loop.gid, 6);
    assert.ok((await st('run/fifo')).isFIFO());
    for (const w of ['var/old', 'var/gone']) {
      const s = await st(w);
      assert.ok(s.isCharacterDevice(), `${w} is a whiteout`);
      assert.equal(s.rdev, 0);
    }
    assert.deepEqual((await readdir(join(dir, 'var'))).sort(), ['gone', 'old'], 'no .wh. names remain');
    assert.equal(xattrs(join(dir, 'opt'))['trusted.overlay.opaque'], '0x79');
    assert.deepEqual(await readdir(join(dir, 'opt')), ['keep']);
    assert.equal(Buffer.compare(await readFile(join(dir, 'big/data')), Buffer.from((ENTRIES.at(-1) as { content: Uint8Array }).content)), 0);
    assert.deepEqual(await readdir(join(cacheDir, '.staging')), [], 'staging is empty');

    // the directory really works as an overlayfs lower dir: whiteouts hide, opaque hides
    const mnt = await tempDir(t);
    const lower2 = join(mnt, 'lower2');
    await mkdir(join(lower2, 'var'), { recursive: true });
    await mkdir(join(lower2, 'opt'), { recursive: true });
    execFileSync('sh', ['-c', `echo a > ${lower2}/var/old; echo b > ${lower2}/var/stay; echo c > ${lower2}/opt/hidden`]);
    const merged = await mountOn(t, ['-t', 'overlay', 'overlay', '-o', `lowerdir=${dir}:${lower2}`]);
    assert.deepEqual((await readdir(join(merged, 'var'))).sort(), ['stay']);
    assert.deepEqual(await readdir(join(merged, 'opt')), ['keep']);
    assert.equal(await readFile(join(merged, 'etc/passwd'), 'utf8'), 'root:x:0:0::/root:/bin/sh\n');
  });
}

test('uncompressed layers, a RangeReader source with faults mid-layer, and range-resume', async (t) => {
  const fx = await layerFixture();
  const server = await startRangeServer(t, fx.tar, { fault: (_r, n) => (n === 2 ? 'reset' : n === 4 ? 'error' : undefined) });
  const layerCache = new LayerCache({ layerCacheDir: await tempDir(t) });
  const downloader = new LayerDownloader({ layerCache, downloadChunkBytes: 1024 * 1024, retryBaseDelayMs: 1 });
  t.after(() => downloader.close());
  const retries: number[] = [];
  downloader.on('retry', (e) => retries.push(e.offset));
  const digest = sha256Digest(fx.tar);
  const dir = await downloader.download({ digest, diffId: digest, source: httpRangeReader(server.url, fx.tar.byteLength) });
  assert.equal((await lstat(join(dir, 'usr/bin/su'))).mode & 0o7777, 0o4755);
  assert.equal(retries.length, 2);
  // every byte was requested once, except the two failed chunks
  const ok = server.requests.filter((_r, i) => i !== 1 && i !== 3);
  assert.equal(ok.reduce((n, r) => n + r.length, 0), fx.tar.byteLength);

  // stream source: a broken stream resumes at the byte it stopped (Range: bytes=N-)
  const fx2 = await layerFixture(ENTRIES.slice(0, 6).concat([{ name: 'x/big', type: 'file', content: pseudoRandom(2_000_000, 9) }]));
  const server2 = await startRangeServer(t, fx2.blob, { fault: (_r, n) => (n === 1 ? 'reset' : undefined) });
  const dir2 = await downloader.download({ digest: fx2.digest, diffId: fx2.diffId, source: httpStreamOpener(server2.url) });
  assert.equal((await lstat(join(dir2, 'x/big'))).size, 2_000_000);
  assert.equal(server2.requests.length, 2);
  assert.ok(server2.requests[1]!.start > 0, 'the second request resumed mid-blob');
});

for (const unpackInWorker of [true, false]) {
  test(`wrong digests, corrupt gzip and unsafe entries fail with codes and leave nothing behind (unpackInWorker: ${unpackInWorker})`, async (t) => {
    const cacheDir = await tempDir(t);
    const layerCache = new LayerCache({ layerCacheDir: cacheDir });
    const downloader = new LayerDownloader({ layerCache, fetchRetries: 0, unpackInWorker });
    t.after(() => downloader.close());
    const expectFail = async (blob: Buffer, code: string, extra: { digest?: Digest; diffId?: Digest } = {}) => {
      const server = await startRangeServer(t, blob);
      const digest = extra.digest ?? sha256Digest(blob);
      await assert.rejects(
        downloader.download({ digest, ...(extra.diffId ? { diffId: extra.diffId } : {}), source: httpRangeReader(server.url, blob.byteLength) }),
        (e: unknown) => e instanceof ImgstreamError && e.code === code,
      );
      assert.equal(layerCache.has(digest), false);
      assert.deepEqual(await readdir(join(cacheDir, '.staging')), []);
      assert.deepEqual((await readdir(cacheDir)).filter((n) => n.startsWith('sha256=')), []);
    };
    const fx = await layerFixture(ENTRIES.slice(0, 4));
    await expectFail(fx.blob, ErrorCode.DIGEST_MISMATCH, { digest: sha256Digest('other') });
    await expectFail(fx.blob, ErrorCode.DIGEST_MISMATCH, { diffId: sha256Digest('other') });
    const corrupt = Buffer.from(fx.blob);
    for (const i of [corrupt.byteLength >> 1, (corrupt.byteLength >> 1) + 1]) corrupt[i] = corrupt[i]! ^ 0xff;
    await expectFail(corrupt, ErrorCode.CORRUPT_DATA);
    const unsafe: TarEntrySpec[][] = [
      [{ name: '../evil', type: 'file', content: 'x' }],
      [{ name: '/abs', type: 'file', content: 'x' }],
      [{ name: 'a/../../evil', type: 'file', content: 'x' }],
      [{ name: 'etc', type: 'symlink', target: '/etc' }, { name: 'etc/passwd', type: 'file', content: 'pwned' }],
      [{ name: 'up', type: 'symlink', target: '..' }, { name: 'up/evil', type: 'file', content: 'x' }],
      [{ name: 'h', type: 'hardlink', target: '../../etc/shadow' }],
      [{ name: 'h', type: 'hardlink', target: 'not-there' }],
      [{ name: 'd', type: 'symlink', target: '/' }, { name: 'd/.wh.etc', type: 'file', content: '' }],
    ];
    for (const entries of unsafe) {
      const tar = Buffer.from(buildTar(entries));
      await expectFail(tar, ErrorCode.UNSAFE_PATH);
    }
  });

  test(`disk full during unpack cleans up and reports IMGSTREAM_DISK_FULL (unpackInWorker: ${unpackInWorker})`, async (t) => {
    const mnt = await mountOn(t, ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs']);
    const fx = await layerFixture();
    const server = await startRangeServer(t, fx.blob);
    const layerCache = new LayerCache({ layerCacheDir: join(mnt, 'layers') });
    const downloader = new LayerDownloader({ layerCache, unpackInWorker });
    t.after(() => downloader.close());
    const failed: unknown[] = [];
    downloader.on('failed', (e) => failed.push(e.error));
    await assert.rejects(downloader.download({ digest: fx.digest, source: httpStreamOpener(server.url) }), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.DISK_FULL);
    assert.equal(failed.length, 1);
    assert.deepEqual(await readdir(join(mnt, 'layers', '.staging')), []);
    const df = execFileSync('df', ['--output=used', '-B1', mnt], { encoding: 'utf8' }).split('\n')[1]!.trim();
    assert.ok(Number(df) < 64 * 1024, `space is given back (${df} bytes used)`);
    assert.equal(layerCache.has(fx.digest), false);

    // many small files (written in the background) fill the disk too
    const small = await layerFixture(Array.from({ length: 40 }, (_, i) => ({ name: `s/f${i}`, type: 'file', content: pseudoRandom(100_000, i + 1) })));
    const server2 = await startRangeServer(t, small.blob);
    await assert.rejects(downloader.download({ digest: small.digest, source: httpStreamOpener(server2.url) }), (e: unknown) => e instanceof ImgstreamError && e.code === ErrorCode.DISK_FULL);
    assert.deepEqual(await readdir(join(mnt, 'layers', '.staging')), []);
  });
}

test('later entries for the same path replace earlier ones', async (t) => {
  const fx = await layerFixture([
    { name: 'a', type: 'file', content: 'first' },
    { name: 'a', type: 'file', content: 'second' },
    { name: 'b', type: 'file', content: 'file' },
    { name: 'b/', type: 'dir', mode: 0o711 },
    { name: 'b/c', type: 'file', content: 'inside' },
    { name: 'd/e', type: 'file', content: 'gone' },
    { name: 'd', type: 'symlink', target: 'b' },
    { name: 'h', type: 'hardlink', target: 'a' },
  ]);
  const server = await startRangeServer(t, fx.blob);
  const layerCache = new LayerCache({ layerCacheDir: await tempDir(t) });
  const downloader = new LayerDownloader({ layerCache });
  t.after(() => downloader.close());
  const dir = await downloader.download({ digest: fx.digest, diffId: fx.diffId, source: httpStreamOpener(server.url) });
  assert.equal(await readFile(join(dir, 'a'), 'utf8'), 'second');
  assert.equal((await lstat(join(dir, 'b'))).mode & 0o7777, 0o711);
  assert.equal(await readFile(join(dir, 'b/c'), 'utf8'), 'inside');
  assert.equal(await readlink(join(dir, 'd')), 'b');
  assert.equal((await lstat(join(dir, 'h'))).ino, (await lstat(join(dir, 'a'))).ino);
});

test('a downloader killed with SIGKILL mid-download leaves a cache that the next start repairs', async (t) => {
  const fx = await layerFixture();
  const server = await startRangeServer(t, fx.blob, { bytesPerSecond: 1024 * 1024 });
  const cacheDir = await tempDir(t);
  const root = new URL('../..', import.meta.url).pathname;
  for (const killAfter of [1, 3, 6]) {
    const child = spawn(process.execPath, ['--conditions=imgstream-source', '--import', 'tsx', join(root, 'test/helpers/download-child.ts'), cacheDir, server.url, fx.digest, String(fx.blob.byteLength)], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    t.after(() => child.kill('SIGKILL'));
    let seen = 0;
    let completed = false;
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, sig) => resolve(sig)));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      for (const line of s.split('\n')) {
        if (line.startsWith('progress') && ++seen === killAfter) child.kill('SIGKILL');
        if (line.startsWith('complete')) completed = true;
      }
    });
    assert.equal(await exited, 'SIGKILL');
    assert.equal(completed, false);
    const names = await readdir(cacheDir);
    assert.ok(names.includes('.staging'));
    const cache = new LayerCache({ layerCacheDir: cacheDir });
    const repair = await cache.ready();
    assert.deepEqual(repair.complete, []);
    assert.equal(cache.has(fx.digest), false);
    assert.deepEqual(await readdir(join(cacheDir, '.staging')), [], `after kill at progress ${killAfter}`);
  }
  const cache = new LayerCache({ layerCacheDir: cacheDir });
  const downloader = new LayerDownloader({ layerCache: cache });
  t.after(() => downloader.close());
  const dir = await downloader.download({ digest: fx.digest, diffId: fx.diffId, source: httpStreamOpener(server.url) });
  assert.equal((await lstat(join(dir, 'usr/bin/su'))).mode & 0o7777, 0o4755);
  const again = new LayerCache({ layerCacheDir: cacheDir });
  assert.deepEqual((await again.ready()).complete, [fx.digest]);
});
