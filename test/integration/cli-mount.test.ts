// `imgstream mount REF DIR` end to end: the CLI runs as a child process against a real
// docker-registry, mounts the image (FUSE layers + kernel overlayfs), and the tree at DIR must
// equal `umoci unpack` of the same image (paths, types, modes, owners, sizes, mtimes, link
// targets, xattrs, content hashes); busybox from the image runs; SIGTERM unmounts everything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RegistryClient, indexImage, parseReference } from '@imgstream/core';
import { allTypesEntries, multiLayerEntries } from '../helpers/fixtures.ts';
import { describeTree, run, sh, teardownStack } from '../helpers/fuse.ts';
import { buildImage, pushImage, writeOciLayout, type BuiltImage, type ImageSpec } from '../helpers/image-builder.ts';
import { makeLab, startContainerd } from '../helpers/containerd.ts';
import { startRegistry } from '../helpers/registry.ts';
import { tempDir, type Teardown } from '../helpers/tmp.ts';

const cliMain = fileURLToPath(new URL('../../packages/cli/src/main.ts', import.meta.url));

/** Mount points under `prefix` in this mount namespace. */
async function mountsUnder(prefix: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p === prefix || p.startsWith(`${prefix}/`));
}

interface MountChild {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Spawns `imgstream mount ...`; the teardown kills it (SIGKILL) and detaches whatever it left mounted under `dirs`. */
function spawnMount(t: Teardown, args: string[], dirs: string[]): MountChild {
  const child = spawn(process.execPath, ['--conditions=imgstream-source', '--import', 'tsx', cliMain, 'mount', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    for (const dir of dirs) for (const m of (await mountsUnder(dir)).reverse()) await run('umount', ['-l', m]);
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Waits until the child printed its `mounted ...` line (or exited). */
async function waitMounted(m: MountChild, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!m.stdout().includes('mounted ')) {
    if (m.child.exitCode !== null) throw new Error(`imgstream mount exited ${m.child.exitCode}: ${m.stderr()}`);
    if (Date.now() > deadline) throw new Error(`imgstream mount did not mount within ${timeoutMs} ms: ${m.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `umoci unpack` of the image: the tree a full extraction gives (the eStargz TOC file left out, as the index hides it). */
async function groundTruth(t: Teardown, image: BuiltImage): Promise<Map<string, string>> {
  const dir = await tempDir(t, 'imgstream-umoci-');
  await writeOciLayout(image, join(dir, 'layout'), 'v1');
  await sh('umoci', ['unpack', '--image', `${join(dir, 'layout')}:v1`, join(dir, 'bundle')], { timeoutMs: 120_000 });
  const tree = await describeTree(join(dir, 'bundle', 'rootfs'));
  tree.delete('stargz.index.json');
  return tree;
}

/** Stops the child with SIGTERM and checks it exits 0 and leaves nothing mounted. */
async function stopAndCheck(m: MountChild, target: string, runtimeDir: string): Promise<void> {
  m.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([m.exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 30_000)))]);
  clearTimeout(timer);
  assert.equal(code, 0, `exit after SIGTERM: ${m.stderr()}`);
  assert.match(m.stderr(), /SIGTERM: unmounting /);
  assert.deepEqual(await mountsUnder(target), [], 'the overlay is unmounted');
  assert.deepEqual(await mountsUnder(runtimeDir), [], 'the FUSE mount is unmounted');
  assert.deepEqual(await readdir(runtimeDir), [], 'the runtime dir is cleaned up');
  assert.deepEqual(await readdir(target), [], 'the mount point is empty again');
}

/**
 * Compares two describeTree maps. Directory mtimes are left out: the layers leave parent
 * directories implicit (no tar entry), and an extraction stamps those with the time it ran.
 */
function assertSameTree(got: Map<string, string>, want: Map<string, string>): void {
  const norm = (line: string | undefined): string | undefined => (line?.startsWith('d ') ? line.replace(/ mtime=\d+/, ' mtime=-') : line);
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [p, w] of want) assert.equal(norm(got.get(p)), norm(w), p);
}

test('imgstream mount: a zran + raw + eStargz image from docker-registry, mounted by a child process, equals umoci unpack; busybox runs from it; SIGTERM unmounts everything; --fallback download for layers without an index', { timeout: 240_000 }, async (tc) => {
  // last-first, every step even when one fails: the mount child is stopped before its dirs are removed
  const t = teardownStack((fn) => tc.after(fn));
  const busybox = new Uint8Array(await readFile('/usr/bin/busybox'));
  const [m0, m1, m2] = multiLayerEntries();
  const spec: ImageSpec = {
    layers: [
      // umoci (Go archive/tar) cannot unpack GNU 'S' sparse entries; PAX sparse is covered
      { entries: [...allTypesEntries().filter((e) => !(e.type === 'sparse' && e.sparseFormat === 'gnu')), { type: 'file', name: 'usr/bin/busybox', content: busybox, mode: 0o755 }] },
      { entries: m0 ?? [] },
      { entries: m1 ?? [], compression: 'none' },
      { entries: m2 ?? [], compression: 'estargz' },
    ],
  };
  const image = buildImage(spec);
  const registry = await startRegistry(t);
  const pushed = await pushImage(registry.url, 'cli/mount:v1', image);
  const c = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => c.close());
  const indexed = await indexImage(c, parseReference(pushed.ref), { platform: { os: 'linux', architecture: 'amd64' } });
  assert.deepEqual(indexed.layers.map((l) => l.kind), ['zran', 'zran', 'raw', 'estargz']);
  const want = await groundTruth(t, image);
  assert.ok(want.size > 30, `${want.size} paths in the ground truth`);

  const work = await tempDir(t, 'imgstream-cli-mount-');
  const target = join(work, 'rootfs');
  const runtimeDir = join(work, 'run');
  const cacheDir = join(work, 'cache');
  const common = ['--plain-http', '--platform', 'linux/amd64', '--cache-dir', cacheDir, '--runtime-dir', runtimeDir];
  const m = spawnMount(t, [...common, pushed.ref, target], [target, runtimeDir]);
  await waitMounted(m);
  assert.match(m.stdout(), /4 layers, 4 streamed, 0 downloaded/);
  const overlay = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.split(' ')[4] === target);
  assert.match(overlay ?? '', / - overlay imgstream ro,/, 'a read-only kernel overlayfs at DIR');
  assert.equal((await mountsUnder(runtimeDir)).length, 1, 'one private FUSE mount');

  assertSameTree(await describeTree(target), want);
  // a binary of the image runs from the mount, directly and as the root of a chroot
  assert.equal(await sh(join(target, 'usr/bin/busybox'), ['cat', join(target, 'app/data/y')]), 'y in layer 1\n');
  assert.equal(await sh('chroot', [target, '/bin/busybox', 'sh', '-c', '/bin/busybox cat /etc/hosts; /bin/busybox ls /app']), '127.0.0.1 localhost\ndata\nlink\n');
  const write = await run('sh', ['-c', `echo x > '${target}/etc/new-file'`]);
  assert.notEqual(write.code, 0, 'the mount is read-only');
  assert.match(write.stderr, /Read-only file system/);
  await stopAndCheck(m, target, runtimeDir);

  // the same layers in an image that has no index artifact (the new top layer carries its parent dir,
  // as image builders write it: overlayfs takes a directory's metadata from the topmost layer that has it): refused with a clear message, or downloaded with --fallback download
  const imageB = buildImage({ ...spec, layers: [...spec.layers, { entries: [{ type: 'dir', name: 'etc/', mode: 0o750, uid: 5, gid: 6, mtime: 1690000001 }, { type: 'file', name: 'etc/b.txt', content: 'image b\n' }] }] });
  const pushedB = await pushImage(registry.url, 'cli/mount:b', imageB);
  const refused = await run(process.execPath, ['--conditions=imgstream-source', '--import', 'tsx', cliMain, 'mount', ...common, pushedB.ref, target], { timeoutMs: 60_000 });
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^imgstream: [^\n]+: 4 of 5 layers have no seekable index \([^)]+\); run `imgstream index [^`]+` first, or mount with `--fallback download`/);
  assert.deepEqual(await mountsUnder(target), []);
  assert.deepEqual(await readdir(runtimeDir), []);

  const mb = spawnMount(t, [...common, '--fallback', 'download', pushedB.ref, target], [target, runtimeDir]);
  await waitMounted(mb);
  assert.match(mb.stdout(), /5 layers, 1 streamed, 4 downloaded/);
  assert.equal((mb.stderr().match(/no index \(IMGSTREAM_NOT_STREAMABLE\), downloading/g) ?? []).length, 4, mb.stderr());
  assertSameTree(await describeTree(target), await groundTruth(t, imageB));
  assert.deepEqual((await readdir(cacheDir)).filter((n) => n.startsWith('sha256=') && !n.endsWith('.complete')).sort(), imageB.layers.slice(0, 3).concat(imageB.layers[4]!).map((l) => l.digest.replace(':', '=')).sort());
  await stopAndCheck(mb, target, runtimeDir);
});

test('imgstream mount of an image converted by `ctr-remote image convert --estargz --oci` equals umoci unpack of the original image', { timeout: 240_000 }, async (tc) => {
  const t = teardownStack((fn) => tc.after(fn));
  const busybox = new Uint8Array(await readFile('/usr/bin/busybox'));
  // no sparse files: ctr-remote's converter cannot carry them (see estargz-ctr-remote.test.ts)
  const image = buildImage({
    layers: [
      { entries: [...allTypesEntries().filter((e) => e.type !== 'sparse'), { type: 'file', name: 'usr/bin/busybox', content: busybox, mode: 0o755 }] },
      ...multiLayerEntries().map((entries) => ({ entries })),
    ],
  });
  const registry = await startRegistry(t);
  const plain = await pushImage(registry.url, 'interop/plain:v1', image);
  const lab = await makeLab(t, 'imgstream-mount-ctrd-');
  const ctrd = await startContainerd(lab);
  const ctr = (...args: string[]) => ctrd.ctr(args, { binary: 'ctr-remote', timeoutMs: 120_000 });
  const esgzRef = `${registry.host}/interop/esgz:v1`;
  await ctr('image', 'pull', '--plain-http', plain.ref);
  await ctr('image', 'convert', '--estargz', '--oci', '--estargz-chunk-size', '65536', plain.ref, esgzRef);
  await ctr('image', 'push', '--plain-http', esgzRef);
  const want = await groundTruth(t, image);

  const work = await tempDir(t, 'imgstream-cli-mount-');
  const target = join(work, 'rootfs');
  const runtimeDir = join(work, 'run');
  const m = spawnMount(t, ['--plain-http', '--platform', 'linux/amd64', '--cache-dir', join(work, 'cache'), '--runtime-dir', runtimeDir, esgzRef, target], [target, runtimeDir]);
  await waitMounted(m);
  assert.match(m.stdout(), /4 layers, 4 streamed, 0 downloaded/);
  assertSameTree(await describeTree(target), want);
  assert.equal(await sh('chroot', [target, '/bin/busybox', 'sh', '-c', '/bin/busybox cat /etc/hosts /app/data/y']), '127.0.0.1 localhost\ny in layer 1\n');
  await stopAndCheck(m, target, runtimeDir);
});
