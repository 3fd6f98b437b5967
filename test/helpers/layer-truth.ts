// Ground truth for layer tests: extracts a layer tar with GNU tar (`tar -x`, as root, with xattrs,
// devices and owners) and compares what a LayerIndex reports against the extracted tree.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstat, readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { readEntryRange, type LayerIndex, type RangeReader } from '@imgstream/core';
import { tempDir, type Teardown } from './tmp.ts';

const run = promisify(execFile);

export interface TruthEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'whiteout';
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  size: number;
  ino: number;
  linkTarget?: string;
  devMajor?: number;
  devMinor?: number;
  opaque?: boolean;
  xattrs: Map<string, string>;
  abs: string;
}

/** Extracts `tar` with GNU tar and returns the tree, whiteouts mapped like the index does. */
export async function extractTruth(t: Teardown, tar: Uint8Array): Promise<Map<string, TruthEntry>> {
  const dir = await tempDir(t, 'imgstream-truth-');
  const file = join(dir, 'layer.tar');
  const root = join(dir, 'root');
  await writeFile(file, tar);
  await run('mkdir', [root]);
  await run('tar', ['--xattrs', "--xattrs-include=*", '--numeric-owner', '-xpf', file, '-C', root]);
  const xattrs = new Map<string, Map<string, string>>();
  const { stdout } = await run('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], { maxBuffer: 64 << 20 }).catch((err: { stdout?: string }) => {
    // getfattr exits non-zero when some node (a device, a fifo) has no xattr support; its output stands
    if (typeof err.stdout !== 'string') throw err;
    return { stdout: err.stdout };
  });
  let cur: Map<string, string> | undefined;
  for (const line of stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      cur = new Map();
      xattrs.set(line.slice(8), cur);
    } else if (cur !== undefined && line.includes('=')) {
      const i = line.indexOf('=');
      cur.set(line.slice(0, i), line.slice(i + 1).replace(/^0x/, ''));
    }
  }
  const out = new Map<string, TruthEntry>();
  const walk = async (rel: string): Promise<void> => {
    for (const name of await readdir(join(root, rel))) {
      const p = rel === '' ? name : `${rel}/${name}`;
      const abs = join(root, p);
      const st = await lstat(abs);
      if (name === '.wh..wh..opq') {
        const parent = out.get(rel);
        if (parent !== undefined) parent.opaque = true;
        continue;
      }
      const base: Omit<TruthEntry, 'type' | 'path'> = {
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        mtimeMs: Number(st.mtimeMs),
        size: st.isFile() ? st.size : 0,
        ino: st.ino,
        xattrs: xattrs.get(abs) ?? new Map(),
        abs,
      };
      if (name.startsWith('.wh.')) {
        const hidden = rel === '' ? name.slice(4) : `${rel}/${name.slice(4)}`;
        out.set(hidden, { ...base, path: hidden, type: 'whiteout' });
        continue;
      }
      const rdev = st.rdev;
      const type: TruthEntry['type'] = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : 'fifo';
      const e: TruthEntry = { ...base, path: p, type };
      if (type === 'symlink') e.linkTarget = await readlink(abs);
      if (type === 'char' || type === 'block') {
        e.devMajor = ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
        e.devMinor = (rdev & 0xff) | ((rdev >> 12) & ~0xff);
      }
      if (!out.has(p) || out.get(p)?.type !== 'whiteout') out.set(p, e);
      if (type === 'dir') await walk(p);
    }
  };
  await walk('');
  return out;
}

export interface CompareOptions {
  /** eStargz TOCs keep whole seconds only. */
  mtimeSeconds?: boolean;
  /** Number of random (file, offset, length) reads. Default 200. */
  randomReads?: number;
  seed?: number;
  /** Compare xattrs (eStargz TOCs from ctr-remote keep them too). Default true. */
  xattrs?: boolean;
}

/** Asserts that every entry and byte the index reports equals the extracted tree. */
export async function assertIndexMatchesTruth(index: LayerIndex, blob: RangeReader, truth: Map<string, TruthEntry>, options: CompareOptions = {}): Promise<void> {
  const indexPaths = [...index.entries.keys()].filter((p) => p !== '').sort();
  const truthPaths = [...truth.keys()].sort();
  assert.deepEqual(indexPaths, truthPaths, 'paths differ');
  const files: string[] = [];
  for (const p of indexPaths) {
    const e = index.entries.get(p);
    const t = truth.get(p);
    assert.ok(e !== undefined && t !== undefined);
    const where = `entry ${JSON.stringify(p)}`;
    if (e.type === 'hardlink') {
      const target = truth.get(e.linkTarget ?? '');
      assert.equal(t.type, 'file', where);
      assert.equal(target?.ino, t.ino, `${where}: hard link target ${e.linkTarget} has another inode`);
      continue;
    }
    assert.equal(e.type, t.type, `${where} type`);
    if (e.type === 'whiteout') continue;
    assert.equal(e.opaque === true, t.opaque === true, `${where} opaque`);
    // implicit parents (mtime 0) get tar's defaults on disk
    if (e.type === 'dir' && e.mtimeMs === 0) continue;
    if (e.type !== 'symlink') assert.equal(e.mode.toString(8), t.mode.toString(8), `${where} mode`);
    assert.equal(e.uid, t.uid, `${where} uid`);
    assert.equal(e.gid, t.gid, `${where} gid`);
    const tm = options.mtimeSeconds === true ? Math.floor(t.mtimeMs / 1000) * 1000 : t.mtimeMs;
    assert.ok(Math.abs(e.mtimeMs - tm) < 0.01, `${where} mtime ${e.mtimeMs} != ${tm}`);
    if (e.type === 'symlink') assert.equal(e.linkTarget, t.linkTarget, `${where} link`);
    if (e.type === 'char' || e.type === 'block') {
      assert.equal(e.devMajor, t.devMajor, `${where} major`);
      assert.equal(e.devMinor, t.devMinor, `${where} minor`);
    }
    if (options.xattrs !== false) {
      const ex = new Map([...(e.xattrs ?? new Map<string, Uint8Array>())].map(([k, v]) => [k, Buffer.from(v).toString('hex')]));
      assert.deepEqual(ex, t.xattrs, `${where} xattrs`);
    }
    if (e.type === 'file') {
      assert.equal(e.size, t.size, `${where} size`);
      const want = await readFile(t.abs);
      const got = await readEntryRange(index, blob, p, 0, e.size);
      assert.ok(Buffer.from(got).equals(want), `${where} content`);
      files.push(p);
    }
  }
  // random reads
  let x = options.seed ?? 12345;
  const rnd = (n: number): number => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return n <= 0 ? 0 : x % n;
  };
  const contents = new Map<string, Buffer>();
  for (let i = 0; i < (options.randomReads ?? 200) && files.length > 0; i++) {
    const p = files[rnd(files.length)] as string;
    const t = truth.get(p) as TruthEntry;
    let want = contents.get(p);
    if (want === undefined) {
      want = await readFile(t.abs);
      contents.set(p, want);
    }
    const off = rnd(want.byteLength + 10);
    const len = rnd(70_000) + 1;
    const got = await readEntryRange(index, blob, p, off, len);
    assert.ok(Buffer.from(got).equals(want.subarray(off, off + len)), `random read ${p} @${off}+${len}`);
  }
}
