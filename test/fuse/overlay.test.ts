// Real FUSE + kernel overlayfs (as root): the merged view of two FUSE layer directories must equal
// a full extraction of the same image by umoci (every path, type, mode, owner, mtime, size,
// link target, xattr and content hash), and a static busybox from the image must run.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImgstreamFs } from '@imgstream/fuse';
import { memoryLayer } from '../helpers/memory-layer.js';
import type { MemoryLayerContent, TarMember } from '../helpers/memory-layer.js';
import { describeTree, mountedFs, run, sh, teardownStack } from '../helpers/fuse.js';
import { writeOciLayout } from '../helpers/oci-layout.js';

const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');

async function layerMembers(): Promise<[TarMember[], TarMember[]]> {
  const busybox = await readFile('/usr/bin/busybox');
  const bottom: TarMember[] = [
    { path: 'etc', type: 'dir', mtime: 1_600_000_000 },
    { path: 'etc/passwd', type: 'file', content: 'root:x:0:0:root:/root:/bin/sh\n' },
    { path: 'etc/hostname', type: 'file', content: 'bottom\n' },
    { path: 'usr', type: 'dir' },
    { path: 'usr/bin', type: 'dir' },
    { path: 'usr/bin/busybox', type: 'file', mode: 0o755, content: busybox },
    { path: 'usr/bin/sh', type: 'symlink', linkTarget: 'busybox' },
    { path: 'usr/bin/hard1', type: 'file', mode: 0o750, uid: 7, gid: 8, content: 'hard' },
    { path: 'usr/bin/hard2', type: 'hardlink', linkTarget: 'usr/bin/hard1' },
    { path: 'usr/bin/ping', type: 'file', mode: 0o755, content: 'ping', xattrs: { 'security.capability': cap } },
    { path: 'usr/bin/su', type: 'file', mode: 0o4755, content: 'su' },
    { path: 'usr/share', type: 'dir' },
    { path: 'usr/share/doc', type: 'dir' },
    { path: 'usr/share/doc/README', type: 'file', content: 'readme' },
    { path: 'var', type: 'dir' },
    { path: 'var/lib', type: 'dir', mode: 0o700, uid: 33, gid: 33 },
    { path: 'var/lib/data', type: 'file', content: 'old data', xattrs: { 'user.a': 'A' } },
    { path: 'tmp', type: 'dir', mode: 0o1777 },
    { path: 'opq', type: 'dir' },
    { path: 'opq/old1', type: 'file', content: 'old1' },
    { path: 'opq/sub', type: 'dir' },
    { path: 'opq/sub/old2', type: 'file', content: 'old2' },
    { path: 'dev', type: 'dir' },
    { path: 'dev/null', type: 'char', mode: 0o666, devMajor: 1, devMinor: 3 },
    { path: 'dev/pipe', type: 'fifo', mode: 0o644 },
  ];
  const top: TarMember[] = [
    { path: 'etc', type: 'dir', mtime: 1_650_000_000, mode: 0o750 },
    { path: 'etc/.wh.hostname', type: 'file' },
    { path: 'etc/new', type: 'file', content: 'new in top\n', uid: 1000, gid: 1000 },
    { path: 'usr', type: 'dir' },
    { path: 'usr/.wh.share', type: 'file' },
    { path: 'var', type: 'dir' },
    { path: 'var/lib', type: 'dir', mode: 0o700, uid: 33, gid: 33 },
    { path: 'var/lib/data', type: 'file', content: 'new data', xattrs: { 'user.b': 'B' } },
    { path: 'opq', type: 'dir', mode: 0o711 },
    { path: 'opq/.wh..wh..opq', type: 'file' },
    { path: 'opq/fresh', type: 'file', content: 'fresh' },
    { path: 'l2', type: 'dir' },
    { path: 'l2/a', type: 'file', content: 'top link', mode: 0o600 },
    { path: 'l2/b', type: 'hardlink', linkTarget: 'l2/a' },
  ];
  return [bottom, top];
}

describe('kernel overlayfs over FUSE layer directories', () => {
  const td = teardownStack(after);
  let fs: ImgstreamFs;
  let layers: MemoryLayerContent[];
  let work: string;
  let merged: string;

  before(async () => {
    const [bottom, top] = await layerMembers();
    layers = [memoryLayer(bottom), memoryLayer(top)];
    work = await mkdtemp(join(tmpdir(), 'imgstream-overlay-'));
    td.after(() => rm(work, { recursive: true, force: true }));
    fs = await mountedFs(td);
    for (const l of layers) fs.addLayer(l.index.layerDigest, l);
    const image = fs.addImage('localhost/test/overlay:1', layers[1]!.index.layerDigest, layers.map((l) => l.index.layerDigest));
    merged = join(work, 'merged');
    await mkdir(merged);
    // lowerdir: top first; through the images/ symlinks, as the snapshotter will use them
    await sh('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${image}/1:${image}/0`, merged]);
    td.after(() => run('umount', ['-l', merged]));
  });

  it('yields exactly the tree a full extraction (umoci unpack) gives', { timeout: 120_000 }, async () => {
    const layout = join(work, 'layout');
    await writeOciLayout(layout, layers.map((l) => l.tar));
    await sh('umoci', ['unpack', '--image', `${layout}:latest`, join(work, 'bundle')], { timeoutMs: 60_000 });
    const want = await describeTree(join(work, 'bundle', 'rootfs'));
    const got = await describeTree(merged);
    // sanity: the ground truth has what the layers say
    assert.equal(want.has('etc/hostname'), false);
    assert.equal(want.has('usr/share'), false);
    assert.equal(want.has('opq/old1'), false);
    assert.match(want.get('usr/bin/ping') ?? '', /security.capability=0x0100000200200000/);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [p, w] of want) assert.equal(got.get(p), w, p);
  });

  it('runs a static busybox from the image (directly and chrooted into the overlay)', async () => {
    const bottom = fs.layerPath(layers[0]!.index.layerDigest);
    // Never spawn a binary on the mount directly from the serving process: libuv's spawn blocks
    // the event loop until the child has exec'd, and that exec needs this process to answer. A shell
    // in between does the exec instead.
    assert.equal(await sh('sh', ['-c', `exec ${bottom}/usr/bin/busybox echo hello from fuse`]), 'hello from fuse\n');
    const out = await sh('chroot', [merged, '/usr/bin/busybox', 'sh', '-c', '/usr/bin/busybox cat /etc/new /var/lib/data; echo; /usr/bin/busybox ls /opq; /usr/bin/sh -c "echo via symlink"']);
    assert.equal(out, 'new in top\nnew data\nfresh\nvia symlink\n');
  });

  it('works as a container rootfs: writable upper layer, copy-up keeps content, mode and xattrs', { timeout: 60_000 }, async () => {
    const rw = join(work, 'rw');
    await mkdir(join(rw, 'upper'), { recursive: true });
    await mkdir(join(rw, 'work'));
    await mkdir(join(rw, 'root'));
    const lower = layers.map((l) => fs.layerPath(l.index.layerDigest)).reverse().join(':');
    await sh('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${rw}/upper,workdir=${rw}/work`, `${rw}/root`]);
    td.after(() => run('umount', ['-l', `${rw}/root`]));
    const bb = '/usr/bin/busybox';
    const script = [
      `${bb} echo "app:x:1000:1000::/:/bin/sh" >> /etc/passwd`,
      `${bb} chmod 4711 /usr/bin/ping`,
      `${bb} rm /usr/bin/hard2`,
      `${bb} echo written > /opq/created`,
      `${bb} cat /etc/passwd`,
    ].join(' && ');
    const out = await sh('chroot', [`${rw}/root`, bb, 'sh', '-c', script]);
    assert.equal(out, 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n');
    // copy-ups landed in the upper dir with the lower file's content, mode and xattrs
    assert.equal(await sh('cat', [`${rw}/upper/etc/passwd`]), out);
    assert.equal((await sh('stat', ['-c', '%a %U', `${rw}/upper/usr/bin/ping`])).trim(), '4711 root');
    assert.match(await sh('getfattr', ['--absolute-names', '-d', '-m', 'security', '-e', 'hex', `${rw}/upper/usr/bin/ping`]), /security.capability=0x0100000200200000/);
    // the removed lower file became a whiteout in upper; the FUSE layer is unchanged
    assert.equal((await sh('stat', ['-c', '%F %t:%T', `${rw}/upper/usr/bin/hard2`])).trim(), 'character special file 0:0');
    assert.equal(await sh('cat', [`${fs.layerPath(layers[0]!.index.layerDigest)}/usr/bin/hard2`]), 'hard');
    assert.equal((await sh('ls', [`${rw}/root/opq`])), 'created\nfresh\n');
  });
});
