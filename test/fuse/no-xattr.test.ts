// Real FUSE + kernel overlayfs (as root): a mount without xattrs (ImgstreamFs `xattrs: false`).
// The kernel must stop asking it for xattrs after the first ENOSYS, an overlay over its layers must
// still merge whiteouts and copy up, and layers that need xattrs must be refused.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@imgstream/core';
import { layerNeedsXattrs, type ImgstreamFs } from '@imgstream/fuse';
import { memoryLayer } from '../helpers/memory-layer.js';
import type { MemoryLayerContent } from '../helpers/memory-layer.js';
import { mountedFs, run, sh, teardownStack } from '../helpers/fuse.js';

const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');

describe('ImgstreamFs without xattrs (xattrs: false)', () => {
  const td = teardownStack(after);
  let fs: ImgstreamFs;
  let bottom: MemoryLayerContent;
  let top: MemoryLayerContent;
  let work: string;
  let getxattrCalls = 0;

  before(async () => {
    const busybox = await readFile('/usr/bin/busybox');
    bottom = memoryLayer([
      { path: 'bin', type: 'dir' },
      { path: 'bin/busybox', type: 'file', mode: 0o755, content: busybox },
      { path: 'etc', type: 'dir' },
      { path: 'etc/hostname', type: 'file', content: 'bottom\n' },
      { path: 'etc/os-release', type: 'file', content: 'ID=test\n' },
      { path: 'srv', type: 'dir' },
      { path: 'srv/a', type: 'file', content: 'a' },
    ]);
    top = memoryLayer([
      { path: 'etc', type: 'dir' },
      { path: 'etc/.wh.hostname', type: 'file' },
      { path: 'etc/new', type: 'file', content: 'new\n' },
      { path: 'srv', type: 'dir' },
      { path: 'srv/b', type: 'file', content: 'b' },
    ]);
    work = await mkdtemp(join(tmpdir(), 'imgstream-noxattr-'));
    td.after(() => rm(work, { recursive: true, force: true }));
    fs = await mountedFs(td, { xattrs: false });
    const served = fs.getxattr.bind(fs);
    fs.getxattr = (path, name) => {
      getxattrCalls++;
      return served(path, name);
    };
    for (const l of [bottom, top]) fs.addLayer(l.index.layerDigest, l);
  });

  it('tells which layers need xattrs: own xattrs or an opaque directory', () => {
    assert.equal(layerNeedsXattrs(bottom.index), false);
    assert.equal(layerNeedsXattrs(top.index), false); // a whiteout is a device node, not an xattr
    assert.equal(layerNeedsXattrs(memoryLayer([{ path: 'ping', type: 'file', content: 'p', xattrs: { 'security.capability': cap } }]).index), true);
    assert.equal(layerNeedsXattrs(memoryLayer([{ path: 'd', type: 'dir' }, { path: 'd/.wh..wh..opq', type: 'file' }]).index), true);
  });

  it('refuses a layer that needs xattrs and keeps serving the others', async () => {
    const withCap = memoryLayer([{ path: 'ping', type: 'file', content: 'p', xattrs: { 'security.capability': cap } }]);
    assert.throws(() => fs.addLayer(withCap.index.layerDigest, withCap), (err: { code?: string }) => err.code === ErrorCode.INVALID_OPTION);
    assert.equal(fs.listLayers().includes(withCap.index.layerDigest), false);
    assert.equal(await sh('cat', [`${fs.layerPath(bottom.index.layerDigest)}/etc/os-release`]), 'ID=test\n');
  });

  it('answers getxattr once: the kernel then fails every xattr call itself', async () => {
    const root = fs.layerPath(bottom.index.layerDigest);
    for (let i = 0; i < 3; i++) {
      const r = await run('getfattr', ['--absolute-names', '-n', 'user.x', `${root}/etc/os-release`]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /Operation not supported/);
    }
    const list = await run('getfattr', ['--absolute-names', '-d', '-m', '-', `${root}/srv/a`]);
    assert.equal(list.stdout, '');
    assert.ok(getxattrCalls <= 1, `the filesystem was asked ${getxattrCalls} times`);
  });

  it('is a container rootfs: overlay lookups, whiteouts and copy-up work, with no xattr round trips', { timeout: 60_000 }, async () => {
    const rw = join(work, 'rw');
    for (const d of ['upper', 'work', 'root']) await mkdir(join(rw, d), { recursive: true });
    const lower = [top, bottom].map((l) => fs.layerPath(l.index.layerDigest)).join(':');
    await sh('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${rw}/upper,workdir=${rw}/work`, `${rw}/root`]);
    td.after(() => run('umount', ['-l', `${rw}/root`]));
    const before = getxattrCalls;
    const bb = '/bin/busybox';
    const out = await sh('chroot', [`${rw}/root`, bb, 'sh', '-c', `${bb} ls /etc && ${bb} ls /srv && ${bb} cat /etc/new && ${bb} echo more >> /etc/os-release && ${bb} cat /etc/os-release`]);
    assert.equal(out, 'new\nos-release\na\nb\nnew\nID=test\nmore\n');
    assert.equal(await sh('cat', [`${rw}/upper/etc/os-release`]), 'ID=test\nmore\n');
    assert.equal(getxattrCalls, before);
  });
});
