// Entry lists shared by the layer tests: every entry type and tar extension.
import type { TarEntrySpec } from './tar-builder.ts';
import { pseudoRandom } from './tar-builder.ts';

const longDir = `deep/${'d'.repeat(120)}`;

/** Every entry type and tar extension (regions of sparse files are 512-aligned, as GNU tar writes them). */
export function allTypesEntries(seed = 1): TarEntrySpec[] {
  return [
    { type: 'dir', name: './', mode: 0o755, mtime: 1690000000 },
    { type: 'dir', name: 'etc/', mode: 0o750, uid: 5, gid: 6, mtime: 1690000001 },
    { type: 'file', name: 'etc/hosts', content: '127.0.0.1 localhost\n', mtime: 1700000000.1234567, xattrs: { 'user.comment': 'hi', 'security.capability': new Uint8Array([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) } },
    { type: 'file', name: 'etc/setuid', content: '#!/bin/sh\n', mode: 0o4755 },
    { type: 'file', name: 'etc/sticky-dir-file', content: '', mode: 0o1777 },
    { type: 'symlink', name: 'etc/long-link', target: `../${'t'.repeat(130)}` },
    { type: 'file', name: 'etc/.wh.removed', content: '' },
    { type: 'file', name: `${longDir}/a-file-with-a-long-name-${'y'.repeat(90)}`, content: 'pax long name\n', uid: 1000, gid: 1000 },
    { type: 'file', name: `gnu/${'z'.repeat(150)}`, content: 'gnu long name\n', longNames: 'gnu' },
    { type: 'symlink', name: 'gnu/long-link', target: `/${'k'.repeat(140)}`, longNames: 'gnu' },
    { type: 'symlink', name: 'bin', target: 'usr/bin' },
    { type: 'file', name: 'usr/bin/tool', content: pseudoRandom(200_000, seed), mode: 0o755, uid: 3_000_000, gid: 3_000_001 },
    { type: 'hardlink', name: 'usr/bin/tool-link', target: 'usr/bin/tool' },
    { type: 'file', name: 'usr/share/doc.txt', content: pseudoRandom(300_000, seed + 1, true) },
    { type: 'char', name: 'dev/null', devMajor: 1, devMinor: 3, mode: 0o666 },
    { type: 'block', name: 'dev/loop0', devMajor: 7, devMinor: 0, mode: 0o660 },
    { type: 'fifo', name: 'run/fifo', mode: 0o600 },
    { type: 'file', name: 'empty', content: '' },
    { type: 'sparse', name: 'sparse/gnu', size: 1_000_000, sparseFormat: 'gnu', regions: [0, 8192, 65536, 100_000 - (100_000 % 512), 300_032, 512_000, 900_096].map((o, i) => ({ offset: o, data: pseudoRandom(1024, 50 + i) })) },
    { type: 'sparse', name: 'sparse/pax1', size: 70_000, sparseFormat: 'pax-1.0', regions: [{ offset: 0, data: pseudoRandom(4096, 7) }, { offset: 61_440, data: pseudoRandom(4096, 8) }] },
    { type: 'sparse', name: 'sparse/pax01', size: 20_000, sparseFormat: 'pax-0.1', regions: [{ offset: 4096, data: pseudoRandom(512, 9) }] },
    { type: 'file', name: 'dup', content: 'first version\n' },
    { type: 'file', name: 'dup', content: 'second version wins\n', mode: 0o600 },
    { type: 'dir', name: 'var/cache', mode: 0o755 },
    { type: 'file', name: 'var/cache/.wh..wh..opq', content: '' },
    { type: 'file', name: 'var/cache/new', content: 'fresh\n' },
    { type: 'file', name: 'utf8/日本語-ファイル.txt', content: 'unicode\n' },
    { type: 'file', name: 'big', content: new Uint8Array(2_500_000).fill(0x41), mtime: 1_600_000_000 },
  ];
}

/** Several layers with whiteouts and opaque dirs over each other. */
export function multiLayerEntries(): TarEntrySpec[][] {
  return [
    [
      { type: 'dir', name: 'app/', mode: 0o755 },
      { type: 'file', name: 'app/a.txt', content: 'a from layer 0\n' },
      { type: 'file', name: 'app/b.txt', content: pseudoRandom(150_000, 11) },
      { type: 'dir', name: 'app/data/', mode: 0o755 },
      { type: 'file', name: 'app/data/x', content: 'x\n' },
    ],
    [
      { type: 'file', name: 'app/.wh.a.txt', content: '' },
      { type: 'file', name: 'app/data/.wh..wh..opq', content: '' },
      { type: 'file', name: 'app/data/y', content: 'y in layer 1\n' },
      { type: 'file', name: 'app/b.txt', content: pseudoRandom(90_000, 12, true) },
    ],
    [
      { type: 'dir', name: 'app/data/', mode: 0o700 },
      { type: 'symlink', name: 'app/link', target: 'data/y' },
      { type: 'file', name: 'app/.wh.b.txt', content: '' },
    ],
  ];
}
