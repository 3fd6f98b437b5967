// Real FUSE (as root): one layer with every kind of entry, checked through the kernel by child processes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir, stat } from 'node:fs/promises';
import { layerDirName } from '@imgstream/fuse';
import type { ImgstreamFs } from '@imgstream/fuse';
import { memoryLayer, sha256 } from '../helpers/memory-layer.js';
import type { MemoryLayerContent, TarMember } from '../helpers/memory-layer.js';
import { mountedFs, run, sh, teardownStack } from '../helpers/fuse.js';

const T0 = 1_700_000_000;
const big = randomBytes(300 * 1024 + 17);
// VFS_CAP_REVISION_2 with CAP_NET_RAW (13) permitted+effective
const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
const longDir = 'deep/' + 'd'.repeat(120);

const members: TarMember[] = [
  { path: 'etc', type: 'dir', mode: 0o755, mtime: T0 + 1 },
  { path: 'etc/passwd', type: 'file', content: 'root:x:0:0:root:/root:/bin/sh\n', mtime: T0 + 2 },
  { path: 'bin', type: 'dir' },
  { path: 'bin/su', type: 'file', mode: 0o4755, content: 'su' },
  { path: 'bin/sg', type: 'file', mode: 0o2711, uid: 0, gid: 42, content: 'sg' },
  { path: 'bin/ping', type: 'file', mode: 0o755, content: 'ping', xattrs: { 'security.capability': cap, 'user.note': 'hello' } },
  { path: 'tmp', type: 'dir', mode: 0o1777 },
  { path: 'srv', type: 'dir', mode: 0o2775, uid: 1000, gid: 1000, mtime: 1_234_567_890 },
  { path: 'srv/owned', type: 'file', uid: 1234, gid: 5678, mode: 0o600, mtime: 1_234_567_891, content: 'mine' },
  { path: 'data', type: 'dir' },
  { path: 'data/big.bin', type: 'file', content: big },
  { path: 'data/empty', type: 'file', content: '' },
  { path: 'data/hard1', type: 'file', content: 'linked content', mode: 0o640 },
  { path: 'data/hard2', type: 'hardlink', linkTarget: 'data/hard1' },
  { path: 'data/hard3', type: 'hardlink', linkTarget: 'data/hard1' },
  { path: 'link-rel', type: 'symlink', linkTarget: 'etc/passwd' },
  { path: 'link-abs', type: 'symlink', linkTarget: '/etc/passwd' },
  { path: 'dev', type: 'dir' },
  { path: 'dev/null', type: 'char', mode: 0o666, devMajor: 1, devMinor: 3 },
  { path: 'dev/sda', type: 'block', mode: 0o660, gid: 6, devMajor: 8, devMinor: 0 },
  { path: 'dev/fifo', type: 'fifo', mode: 0o600 },
  { path: 'gone-dir', type: 'dir' },
  { path: 'gone-dir/.wh.gone', type: 'file' },
  { path: 'opaque', type: 'dir' },
  { path: 'opaque/.wh..wh..opq', type: 'file' },
  { path: 'opaque/kept', type: 'file', content: 'kept' },
  { path: 'deep', type: 'dir' },
  { path: longDir, type: 'dir' },
  { path: `${longDir}/${'f'.repeat(150)}`, type: 'file', content: 'long path' },
];

describe('ImgstreamFs metadata and content through the kernel', () => {
  let fs: ImgstreamFs;
  let layer: MemoryLayerContent;
  let root: string;

  const td = teardownStack(after);

  before(async () => {
    layer = memoryLayer(members);
    fs = await mountedFs(td);
    fs.addLayer(layer.index.layerDigest, layer);
    root = fs.layerPath(layer.index.layerDigest);
  });

  it('lists the mount root, layers/ and the layer root', async () => {
    assert.deepEqual((await sh('ls', ['-a', fs.mountPoint])).split('\n').filter(Boolean), ['.', '..', 'images', 'layers']);
    assert.equal((await sh('ls', [`${fs.mountPoint}/layers`])).trim(), layerDirName(layer.index.layerDigest));
    const names = (await sh('ls', ['-A', root], {})).split('\n').filter(Boolean);
    assert.deepEqual(names, ['bin', 'data', 'deep', 'dev', 'etc', 'gone-dir', 'link-abs', 'link-rel', 'opaque', 'srv', 'tmp']);
    assert.deepEqual((await sh('ls', ['-A', `${root}/gone-dir`])).trim(), 'gone');
    assert.deepEqual((await sh('ls', ['-A', `${root}/opaque`])).trim(), 'kept');
  });

  it('opens files without OPEN or RELEASE round trips after the first (zero-message open)', async () => {
    let opens = 0;
    const served = fs.open.bind(fs);
    fs.open = (path) => {
      opens++;
      return served(path);
    };
    try {
      const files = ['etc/passwd', 'bin/su', 'bin/sg', 'srv/owned', 'data/hard1', 'data/hard2', 'opaque/kept', `${longDir}/${'f'.repeat(150)}`];
      const out = await sh('sh', ['-c', `for i in 1 2 3; do cat ${files.map((f) => `'${root}/${f}'`).join(' ')}; done; sha256sum '${root}/data/big.bin'`]);
      const once = 'root:x:0:0:root:/root:/bin/sh\nsusgminelinked contentlinked contentkeptlong path';
      assert.equal(out, `${once.repeat(3)}${sha256(big).slice(7)}  ${root}/data/big.bin\n`);
      // earlier tests may already have switched the connection: then no OPEN at all
      assert.ok(opens <= 1, `the filesystem was asked to open ${opens} times`);
    } finally {
      fs.open = served;
    }
  });

  it('reports type, mode bits, owner, size, times and devices exactly', async () => {
    const paths = ['etc', 'etc/passwd', 'bin/su', 'bin/sg', 'bin/ping', 'tmp', 'srv', 'srv/owned', 'data/big.bin', 'data/empty', 'link-rel', 'link-abs', 'dev/null', 'dev/sda', 'dev/fifo', 'gone-dir/gone'];
    const out = await sh('stat', ['-c', '%n|%f|%u|%g|%s|%Y|%t|%T', ...paths.map((p) => `${root}/${p}`)]);
    const got = new Map(out.trim().split('\n').map((l) => {
      const [n, ...rest] = l.split('|');
      return [n!.slice(root.length + 1), rest.join('|')];
    }));
    const hex = (n: number): string => n.toString(16);
    const expect: Record<string, string> = {
      etc: `${hex(0o40755)}|0|0|4096|${T0 + 1}|0|0`,
      'etc/passwd': `${hex(0o100644)}|0|0|30|${T0 + 2}|0|0`,
      'bin/su': `${hex(0o104755)}|0|0|2|${T0}|0|0`,
      'bin/sg': `${hex(0o102711)}|0|42|2|${T0}|0|0`,
      'bin/ping': `${hex(0o100755)}|0|0|4|${T0}|0|0`,
      tmp: `${hex(0o41777)}|0|0|4096|${T0}|0|0`,
      srv: `${hex(0o42775)}|1000|1000|4096|1234567890|0|0`,
      'srv/owned': `${hex(0o100600)}|1234|5678|4|1234567891|0|0`,
      'data/big.bin': `${hex(0o100644)}|0|0|${big.length}|${T0}|0|0`,
      'data/empty': `${hex(0o100644)}|0|0|0|${T0}|0|0`,
      'link-rel': `${hex(0o120777)}|0|0|10|${T0}|0|0`,
      'link-abs': `${hex(0o120777)}|0|0|11|${T0}|0|0`,
      'dev/null': `${hex(0o20666)}|0|0|0|${T0}|1|3`,
      'dev/sda': `${hex(0o60660)}|0|6|0|${T0}|8|0`,
      'dev/fifo': `${hex(0o10600)}|0|0|0|${T0}|0|0`,
      'gone-dir/gone': `${hex(0o20000)}|0|0|0|${T0}|0|0`,
    };
    for (const [p, want] of Object.entries(expect)) assert.equal(got.get(p), want, p);
  });

  it('shares one inode number between hard links, with the right link count', async () => {
    const out = await sh('stat', ['-c', '%i %h', `${root}/data/hard1`, `${root}/data/hard2`, `${root}/data/hard3`, `${root}/etc/passwd`]);
    const [a, b, c, other] = out.trim().split('\n');
    assert.match(a!, /^\d+ 3$/);
    assert.equal(b, a);
    assert.equal(c, a);
    assert.notEqual(other!.split(' ')[0], a!.split(' ')[0]);
    assert.equal((await sh('cat', [`${root}/data/hard3`])), 'linked content');
    // directories: 2 + sub-directories
    assert.equal((await sh('stat', ['-c', '%h', `${root}/deep`, root])).trim(), '3\n11');
  });

  it('gives stable inode numbers (same across lookups, unique across paths)', async () => {
    const all = (await sh('find', [root, '-printf', '%i %P\n'])).trim().split('\n');
    const again = (await sh('find', [root, '-printf', '%i %P\n'])).trim().split('\n');
    assert.deepEqual(again, all);
    const byIno = new Map<string, string[]>();
    for (const line of all) {
      const [ino, p] = [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)];
      byIno.set(ino, [...(byIno.get(ino) ?? []), p]);
    }
    const shared = [...byIno.values()].filter((v) => v.length > 1);
    assert.deepEqual(shared.map((v) => v.sort()), [['data/hard1', 'data/hard2', 'data/hard3']]);
  });

  it('reads file content byte-exactly (sequential, random offsets, async fs)', async () => {
    const sum = (await sh('sha256sum', [`${root}/data/big.bin`])).split(' ')[0];
    assert.equal(`sha256:${sum}`, sha256(big));
    // odd offsets and lengths through dd
    const part = await sh('sh', ['-c', `dd if=${root}/data/big.bin bs=1 skip=70001 count=5000 status=none | sha256sum`]);
    assert.equal(`sha256:${part.split(' ')[0]}`, sha256(big.subarray(70001, 75001)));
    // async fs from this process is fine (libuv pool, not the event loop)
    assert.deepEqual(await readFile(`${root}/data/big.bin`), big);
    assert.equal(await readFile(`${root}/${longDir}/${'f'.repeat(150)}`, 'utf8'), 'long path');
    assert.equal(await readFile(`${root}/data/empty`, 'utf8'), '');
    assert.equal((await stat(`${root}/data/big.bin`)).size, big.length);
    assert.ok((await readdir(`${root}/dev`)).includes('fifo'));
  });

  it('returns symlink targets verbatim', async () => {
    assert.equal((await sh('readlink', [`${root}/link-rel`, `${root}/link-abs`])), 'etc/passwd\n/etc/passwd\n');
    assert.equal(await sh('cat', [`${root}/link-rel`]), 'root:x:0:0:root:/root:/bin/sh\n');
  });

  it('serves xattrs: security.capability, user.*, and the overlay opaque marker', async () => {
    const out = await sh('getfattr', ['--absolute-names', '-d', '-m', '-', '-e', 'hex', `${root}/bin/ping`]);
    assert.match(out, new RegExp(`security.capability=0x${cap.toString('hex')}`));
    assert.match(out, /user.note=0x68656c6c6f/);
    assert.equal((await sh('getfattr', ['--absolute-names', '--only-values', '-n', 'trusted.overlay.opaque', `${root}/opaque`])), 'y');
    const none = await run('getfattr', ['-n', 'user.missing', `${root}/bin/ping`]);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /No such attribute/);
    // an entry without xattrs lists none
    assert.equal((await sh('getfattr', ['--absolute-names', '-d', '-m', '-', `${root}/etc/passwd`])), '');
    // getcap-style size probing then read with an exact buffer
    const names = await sh('getfattr', ['--absolute-names', '-m', '-', `${root}/bin/ping`]);
    assert.match(names, /security.capability\nuser.note/);
  });

  it('answers ENOENT, ENOTDIR and EROFS', async () => {
    const enoent = await run('cat', [`${root}/etc/nope`]);
    assert.match(enoent.stderr, /No such file or directory/);
    assert.match((await run('stat', [`${fs.mountPoint}/layers/sha256=${'0'.repeat(64)}`])).stderr, /No such file or directory/);
    assert.match((await run('stat', [`${root}/etc/passwd/x`])).stderr, /Not a directory/);
    for (const [cmd, args] of [
      ['touch', [`${root}/new`]],
      ['mkdir', [`${root}/newdir`]],
      ['rm', ['-f', `${root}/etc/passwd`]],
      ['chmod', ['777', `${root}/etc/passwd`]],
      ['ln', ['-s', 'x', `${root}/newlink`]],
      ['mv', [`${root}/etc/passwd`, `${root}/etc/moved`]],
      ['setfattr', ['-n', 'user.x', '-v', '1', `${root}/etc/passwd`]],
      ['sh', ['-c', `echo x >> ${root}/etc/passwd`]],
    ] as const) {
      const r = await run(cmd, args);
      assert.notEqual(r.code, 0, cmd);
      assert.match(r.stderr, /Read-only file system/, `${cmd}: ${r.stderr}`);
    }
  });

  it('answers statfs', async () => {
    const out = (await sh('stat', ['-f', '-c', '%T %l %c %b', fs.mountPoint])).trim().split(' ');
    assert.equal(out[0], 'fuseblk' === out[0] ? 'fuseblk' : 'fuse');
    assert.equal(out[1], '255');
    assert.equal(Number(out[2]), layer.index.entries.size);
    assert.ok(Number(out[3]) >= Math.ceil(big.length / 4096));
  });

  it('shows images/ as symlinks to layer directories, switchable to a local directory', async () => {
    const other = memoryLayer([{ path: 'x', type: 'file', content: 'x' }]);
    const ref = 'registry.example:5000/team/app:v1';
    const manifest = sha256(Buffer.from('manifest'));
    const dir = fs.addImage(ref, manifest, [layer.index.layerDigest, other.index.layerDigest]);
    assert.equal(dir, `${fs.mountPoint}/images/registry.example%3A5000%2Fteam%2Fapp%3Av1@sha256=${manifest.slice(7)}`);
    assert.deepEqual((await sh('ls', [dir])).split('\n').filter(Boolean), ['0', '1']);
    assert.equal((await sh('readlink', [`${dir}/0`])).trim(), `../../layers/${layerDirName(layer.index.layerDigest)}`);
    assert.equal(await sh('cat', [`${dir}/0/etc/passwd`]), 'root:x:0:0:root:/root:/bin/sh\n');
    // layer 1 is not added yet: a dangling link, then a real one
    assert.notEqual((await run('ls', [`${dir}/1/`])).code, 0);
    fs.addLayer(other.index.layerDigest, other);
    assert.equal(await sh('cat', [`${dir}/1/x`]), 'x');
    fs.setLayerLocalDir(other.index.layerDigest, '/var/lib/imgstream/layers/x');
    assert.equal((await sh('readlink', [`${dir}/1`])).trim(), '/var/lib/imgstream/layers/x');
    fs.setLayerLocalDir(other.index.layerDigest, undefined);
    assert.equal((await sh('readlink', [`${dir}/1`])).trim(), `../../layers/${layerDirName(other.index.layerDigest)}`);
    assert.equal(fs.removeImage(ref, manifest), true);
    assert.equal(fs.removeImage(ref, manifest), false);
    assert.equal((await sh('ls', [`${fs.mountPoint}/images`])).trim(), '');
  });
});

describe('ImgstreamFs large directories', () => {
  it('lists a directory of 100k entries completely and in order', { timeout: 120_000 }, async (t) => {
    const n = 100_000;
    const names: string[] = [];
    const members: TarMember[] = [{ path: 'many', type: 'dir' }];
    for (let i = 0; i < n; i++) {
      const name = `f${i.toString().padStart(6, '0')}`;
      names.push(name);
      members.push({ path: `many/${name}`, type: 'file' });
    }
    const layer = memoryLayer(members);
    const fs = await mountedFs(t);
    fs.addLayer(layer.index.layerDigest, layer);
    const dir = `${fs.layerPath(layer.index.layerDigest)}/many`;
    const listed = await sh('ls', ['-1', dir], { timeoutMs: 60_000 });
    const want = names.join('\n') + '\n';
    assert.equal(createHash('sha256').update(listed).digest('hex'), createHash('sha256').update(want).digest('hex'));
    // ls -f does not sort: raw readdir order, with . and ..
    const raw = (await sh('sh', ['-c', `ls -f ${dir} | wc -l`], { timeoutMs: 60_000 })).trim();
    assert.equal(raw, String(n + 2));
    // find uses d_type from readdir
    assert.equal((await sh('sh', ['-c', `find ${dir} -type f | wc -l`], { timeoutMs: 60_000 })).trim(), String(n));
  });
});
