import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, isImgstreamError, readTar, type ReadTarEntry } from '@imgstream/core';
import { allTypesEntries } from '../../../test/helpers/fixtures.ts';
import { buildTar, chunked, paxRecords, tarHeader } from '../../../test/helpers/tar-builder.ts';

interface Seen {
  entry: Omit<ReadTarEntry, 'body' | 'xattrs' | 'pax'> & { xattrs: Record<string, string> };
  body: string;
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Seen[]> {
  const out: Seen[] = [];
  for await (const e of readTar(source)) {
    const parts: Uint8Array[] = [];
    for await (const c of e.body) parts.push(Uint8Array.from(c));
    const { body: _b, xattrs, pax: _p, ...rest } = e;
    out.push({ entry: { ...rest, xattrs: Object.fromEntries([...xattrs].map(([k, v]) => [k, Buffer.from(v).toString('hex')])) }, body: Buffer.concat(parts).toString('hex') });
  }
  return out;
}

const isTarError = (err: unknown): boolean => isImgstreamError(err, ErrorCode.INVALID_TAR);

test('readTar reports every entry type and extension with its header fields and data offsets', async () => {
  const tar = buildTar(allTypesEntries());
  const seen = await collect(chunked(tar, 65536));
  const by = new Map(seen.map((s) => [s.entry.name, s]));
  const hosts = by.get('etc/hosts');
  assert.equal(hosts?.entry.type, 'file');
  assert.ok(Math.abs((hosts?.entry.mtimeMs ?? 0) - 1700000000123.457) < 1e-2, String(hosts?.entry.mtimeMs));
  assert.equal(hosts?.entry.xattrs['user.comment'], Buffer.from('hi').toString('hex'));
  assert.equal(Buffer.from(hosts?.body ?? '', 'hex').toString(), '127.0.0.1 localhost\n');
  // data offset points at the content in the stream
  const off = hosts?.entry.dataOffset ?? -1;
  assert.equal(Buffer.from(tar.subarray(off, off + 9)).toString(), '127.0.0.1');
  assert.equal(by.get('etc/setuid')?.entry.mode, 0o4755);
  const longPax = seen.find((s) => s.entry.name.startsWith('deep/'));
  assert.ok(longPax !== undefined && longPax.entry.name.length > 200 && longPax.entry.uid === 1000);
  assert.equal(seen.find((s) => s.entry.name.startsWith('gnu/z'))?.entry.name, `gnu/${'z'.repeat(150)}`);
  assert.equal(by.get('gnu/long-link')?.entry.linkName, `/${'k'.repeat(140)}`);
  assert.equal(by.get('etc/long-link')?.entry.linkName, `../${'t'.repeat(130)}`);
  assert.equal(by.get('usr/bin/tool')?.entry.uid, 3_000_000);
  assert.equal(by.get('usr/bin/tool')?.entry.gid, 3_000_001);
  assert.equal(by.get('usr/bin/tool-link')?.entry.type, 'hardlink');
  assert.equal(by.get('dev/null')?.entry.type, 'char');
  assert.equal(by.get('dev/null')?.entry.devMinor, 3);
  assert.equal(by.get('dev/loop0')?.entry.type, 'block');
  assert.equal(by.get('run/fifo')?.entry.type, 'fifo');
  const gnuSparse = by.get('sparse/gnu');
  assert.equal(gnuSparse?.entry.sparse, true);
  assert.equal(gnuSparse?.entry.size, 1_000_000);
  assert.equal(gnuSparse?.entry.regions.length, 7);
  assert.equal(gnuSparse?.entry.dataSize, 7 * 1024);
  const pax1 = by.get('sparse/pax1');
  assert.deepEqual(pax1?.entry.regions.map((r) => [r.fileOffset, r.length]), [[0, 4096], [61_440, 4096]]);
  assert.equal(pax1?.entry.regions[0]?.streamOffset, pax1?.entry.dataOffset);
  assert.equal(by.get('sparse/pax01')?.entry.size, 20_000);
  assert.equal(seen.filter((s) => s.entry.name === 'dup').length, 2);
});

test('readTar gives identical results when fed one byte at a time', async () => {
  const tar = buildTar(allTypesEntries().filter((e) => e.name !== 'big' && e.name !== 'usr/share/doc.txt' && e.name !== 'usr/bin/tool'));
  assert.deepEqual(await collect(chunked(tar, 1)), await collect(chunked(tar, tar.byteLength)));
});

test('readTar rejects truncated archives at any point with IMGSTREAM_INVALID_TAR', async () => {
  const tar = buildTar(allTypesEntries().filter((e) => e.name !== 'big' && e.name !== 'usr/share/doc.txt' && e.name !== 'usr/bin/tool'));
  const cuts = new Set<number>();
  for (let c = 0; c < tar.byteLength - 1024; c += 512) cuts.add(c);
  for (let i = 0; i < 60; i++) cuts.add(Math.floor((tar.byteLength * i) / 60) + 7);
  for (const cut of cuts) {
    if (cut >= tar.byteLength - 1024 + 1) continue;
    await assert.rejects(collect(chunked(tar.subarray(0, cut), 4096)), isTarError, `cut at ${cut}`);
  }
});

test('readTar rejects corrupted headers: checksum, numeric fields, PAX records, unknown types', async () => {
  const good = buildTar([{ type: 'file', name: 'a', content: 'hello' }]);
  for (const pos of [0, 50, 100, 124, 148, 156, 257, 300]) {
    const bad = Uint8Array.from(good);
    bad[pos] = (bad[pos] ?? 0) ^ 0x5a;
    await assert.rejects(collect([bad] as unknown as AsyncIterable<Uint8Array>), isTarError, `flip at ${pos}`);
  }
  const base = { name: 'x', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0, linkname: '', uname: '', gname: '', devMajor: 0, devMinor: 0, magic: 'ustar' as const };
  // a non-octal digit in size, with a valid checksum
  const badNum = tarHeader({ ...base, typeflag: '0' }, (b) => b.set(Buffer.from('0000000009z\0'), 124));
  await assert.rejects(collect(chunked(Buffer.concat([badNum, new Uint8Array(1024)]), 512)), /malformed numeric field size/);
  // unknown typeflag
  const unknown = tarHeader({ ...base, typeflag: 'V' });
  await assert.rejects(collect(chunked(Buffer.concat([unknown, new Uint8Array(1024)]), 512)), /unsupported entry type/);
  // malformed PAX record length
  const pax = Buffer.from('99 path=x\n');
  const paxHdr = tarHeader({ ...base, name: 'PaxHeaders/x', size: pax.byteLength, typeflag: 'x' });
  const pad = new Uint8Array(512 - pax.byteLength);
  await assert.rejects(collect(chunked(Buffer.concat([paxHdr, pax, pad, tarHeader({ ...base, typeflag: '0' }), new Uint8Array(1024)]), 512)), /malformed PAX record/);
  // PAX header followed by the end of archive
  const ok = paxRecords([['path', 'y']]);
  const hdr2 = tarHeader({ ...base, name: 'PaxHeaders/y', size: ok.byteLength, typeflag: 'x' });
  await assert.rejects(collect(chunked(Buffer.concat([hdr2, ok, new Uint8Array(512 - ok.byteLength), new Uint8Array(1024)]), 512)), /extension header without a following entry/);
  // garbage after a single zero block
  await assert.rejects(collect(chunked(Buffer.concat([good.subarray(0, 1024), new Uint8Array(512), Buffer.alloc(512, 1)]), 512)), /garbage after an end-of-archive/);
  // PAX size must be decimal
  const badSize = paxRecords([['size', '12a']]);
  const hdr3 = tarHeader({ ...base, name: 'PaxHeaders/z', size: badSize.byteLength, typeflag: 'x' });
  await assert.rejects(collect(chunked(Buffer.concat([hdr3, badSize, new Uint8Array(512 - badSize.byteLength), tarHeader({ ...base, typeflag: '0' }), new Uint8Array(1024)]), 512)), /malformed PAX size/);
});

test('readTar reads base-256 sizes and ids, and bounds extension payloads', async () => {
  const base = { name: 'big-id', mode: 0o644, size: 3, mtime: 0, linkname: '', uname: '', gname: '', devMajor: 0, devMinor: 0, magic: 'gnu' as const, typeflag: '0' };
  const hdr = tarHeader({ ...base, uid: 0o7777777 + 5, gid: 2 ** 40 });
  const seen = await collect(chunked(Buffer.concat([hdr, Buffer.from('abc'), new Uint8Array(509), new Uint8Array(1024)]), 100));
  assert.equal(seen[0]?.entry.uid, 0o7777777 + 5);
  assert.equal(seen[0]?.entry.gid, 2 ** 40);
  assert.equal(Buffer.from(seen[0]?.body ?? '', 'hex').toString(), 'abc');
  // negative base-256
  const neg = tarHeader({ ...base, uid: 0, gid: 0 }, (b) => {
    b.fill(0xff, 108, 116);
  });
  await assert.rejects(collect(chunked(Buffer.concat([neg, Buffer.from('abc'), new Uint8Array(509), new Uint8Array(1024)]), 512)), /negative base-256/);
  // an oversized GNU long name
  const long = 'n'.repeat(2000);
  const tar = buildTar([{ type: 'file', name: long, content: 'x', longNames: 'gnu' }]);
  await assert.rejects(async () => {
    for await (const _ of readTar(chunked(tar, 512), { maxExtensionBytes: 1000 })) void _;
  }, (err: unknown) => isTarError(err) && /exceeds the 1000-byte limit/.test((err as Error).message));
});

test('readTar skips unread bodies and streams read ones exactly', async () => {
  const tar = buildTar([
    { type: 'file', name: 'a', content: 'A'.repeat(1000) },
    { type: 'file', name: 'b', content: 'B'.repeat(3000) },
    { type: 'file', name: 'c', content: 'C' },
  ]);
  const names: string[] = [];
  let bBody = '';
  for await (const e of readTar(chunked(tar, 333))) {
    names.push(e.name);
    if (e.name === 'b') for await (const c of e.body) bBody += Buffer.from(c).toString();
  }
  assert.deepEqual(names, ['a', 'b', 'c']);
  assert.equal(bBody, 'B'.repeat(3000));
});

test('readTar decodes LIBARCHIVE.xattr.* (URL-encoded name, base64 value) and rejects malformed ones', async () => {
  const value = Buffer.from([0, 0xff, 1, 0x80, 0x7f]);
  const tar = buildTar([{ type: 'file', name: 'f', content: 'x', pax: { 'LIBARCHIVE.xattr.trusted.a%20b': value.toString('base64'), 'SCHILY.xattr.user.s': 'v' } }]);
  const seen = await collect(chunked(tar, 512));
  assert.deepEqual(seen[0]?.entry.xattrs, { 'trusted.a b': value.toString('hex'), 'user.s': Buffer.from('v').toString('hex') });
  const bad = buildTar([{ type: 'file', name: 'f', content: 'x', pax: { 'LIBARCHIVE.xattr.user.x': 'not base64!' } }]);
  await assert.rejects(collect(chunked(bad, 512)), isTarError);
  const badName = buildTar([{ type: 'file', name: 'f', content: 'x', pax: { 'LIBARCHIVE.xattr.user%E0%A4%A': 'AA==' } }]);
  await assert.rejects(collect(chunked(badName, 512)), isTarError);
});
