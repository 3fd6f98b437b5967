// FUSE benchmark: each operation on the imgstream FUSE mount as a ratio to the same operation on a
// local directory (ext4/tmpfs, whatever the temp dir is) holding the same files.
//   node --conditions=imgstream-source --import tsx bench/fuse.ts
// All I/O on the mount is done by child processes (this process serves the mount).
// Content comes from memory (the test-only MemoryLayerContent): this measures the FUSE path,
// not the registry or the block fetcher.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImgstreamFs } from '@imgstream/fuse';
import { MemoryLayerContent, writeTar } from '../test/helpers/memory-layer.js';
import type { TarMember } from '../test/helpers/memory-layer.js';

const BIG_BYTES = 256 * 1024 * 1024;
const DIRS = 500;
const FILES_PER_DIR = 100;
const RUNS = 5;

function sh(script: string): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const p = spawn('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`${script}: exit ${code}`))));
  });
}

async function median(fn: () => Promise<number>, runs = RUNS): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < runs; i++) xs.push(await fn());
  xs.sort((a, b) => a - b);
  return xs[Math.floor(xs.length / 2)]!;
}

const work = await mkdtemp(join(tmpdir(), 'imgstream-bench-fuse-'));
const fs = new ImgstreamFs({ mountPoint: join(work, 'mnt') });
try {
  const members: TarMember[] = [{ path: 'big', type: 'dir' }, { path: 'big/file', type: 'file', content: randomBytes(BIG_BYTES) }, { path: 'tree', type: 'dir' }];
  const small = randomBytes(1024);
  for (let d = 0; d < DIRS; d++) {
    members.push({ path: `tree/d${d}`, type: 'dir' });
    for (let f = 0; f < FILES_PER_DIR; f++) members.push({ path: `tree/d${d}/f${f}`, type: 'file', content: small });
  }
  const tar = writeTar(members);
  const layer = new MemoryLayerContent(tar);
  const local = join(work, 'local');
  await mkdir(local);
  await writeFile(join(work, 'layer.tar'), tar);
  await sh(`tar -C ${local} -xf ${join(work, 'layer.tar')} && rm ${join(work, 'layer.tar')}`);
  await fs.mount();
  fs.addLayer(layer.index.layerDigest, layer);
  const mnt = fs.layerPath(layer.index.layerDigest);

  const rows: [string, number, number][] = [];
  const both = async (name: string, op: (root: string) => Promise<number>): Promise<void> => {
    const f = await op(mnt);
    const l = await op(local);
    rows.push([name, f, l]);
  };

  // metadata first, while the mount's kernel caches are cold
  const findAll = (root: string): string => `find ${root}/tree -type f | wc -l >/dev/null`;
  const statAll = (root: string): string => `find ${root}/tree -type f -print0 | xargs -0 stat -c %s >/dev/null`;
  await both('find over 50k files, cold (first walk)', (root) => sh(findAll(root)));
  await both('stat of 50k files, first time (lookup+getattr)', (root) => sh(statAll(root)));
  await both('find over 50k files, warm', (root) => median(() => sh(findAll(root))));
  await both('stat of 50k files, warm (attr cache)', (root) => median(() => sh(statAll(root))));
  await both('readdir of 500 dirs x 100 entries (ls -f)', (root) => median(() => sh(`for d in ${root}/tree/*; do ls -f $d; done >/dev/null`)));

  const seq = (root: string): Promise<number> => sh(`dd if=${root}/big/file of=/dev/null bs=1M status=none`);
  await seq(mnt);
  await seq(local);
  await both('sequential read 256 MiB, page cache warm', (root) => median(() => seq(root)));
  const fuseCold = await median(async () => {
    await sh(`dd if=${mnt}/big/file iflag=nocache count=0 status=none`);
    return seq(mnt);
  });
  rows.push(['sequential read 256 MiB, FUSE page cache dropped (served by imgstream from memory) vs local warm', fuseCold, rows.at(-1)![2]]);

  const mib = BIG_BYTES / 1024 / 1024;
  const lines = ['| operation | FUSE ms | local ms | FUSE / local (time) |', '|---|---:|---:|---:|'];
  for (const [name, f, l] of rows) {
    const extra = name.startsWith('sequential') ? ` (${(mib / (f / 1000)).toFixed(0)} vs ${(mib / (l / 1000)).toFixed(0)} MiB/s)` : '';
    lines.push(`| ${name}${extra} | ${f.toFixed(1)} | ${l.toFixed(1)} | ${(f / l).toFixed(2)} |`);
  }
  console.log(lines.join('\n'));
} finally {
  await fs.close();
  await rm(work, { recursive: true, force: true });
}
