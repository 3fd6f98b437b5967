// Layer index benchmark: build throughput vs `gzip -d`, index size vs layer size, and read
// amplification of small random reads, for zran (several spans), raw and eStargz.
//   node --conditions=imgstream-source --import tsx bench/src/layer-index.ts [DIR...]
// Builds a layer from DIR (default: /usr/lib/python3.11 /usr/bin), gzip -6 like docker/buildkit.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { BufferRangeReader, buildRawIndex, buildZranIndex, openEstargzIndex, readTar, serialiseIndex, sha256Digest, type LayerIndex } from '@imgstream/core';
import { buildEstargz } from '../../test/helpers/estargz-builder.ts';
import type { TarEntrySpec } from '../../test/helpers/tar-builder.ts';

const dirs = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['/usr/lib/python3.11', '/usr/bin'];
const work = mkdtempSync(join(tmpdir(), 'imgstream-bench-'));
try {
  const tarPath = join(work, 'layer.tar');
  execFileSync('tar', ['--sort=name', '--numeric-owner', '-cf', tarPath, ...dirs], { stdio: ['ignore', 'ignore', 'ignore'] });
  execFileSync('sh', ['-c', `gzip -6 -c ${tarPath} > ${tarPath}.gz`]);
  const tar = new Uint8Array(readFileSync(tarPath));
  const gz = new Uint8Array(readFileSync(`${tarPath}.gz`));
  const mb = (n: number) => (n / 2 ** 20).toFixed(1);
  console.log(`layer: ${dirs.join(' ')} — tar ${mb(tar.byteLength)} MiB, gzip -6 ${mb(gz.byteLength)} MiB`);

  const t0 = performance.now();
  const r = spawnSync('sh', ['-c', `gzip -dc ${tarPath}.gz > /dev/null`]);
  if (r.status !== 0) throw new Error('gzip -d failed');
  const gunzipMs = performance.now() - t0;

  async function* chunks(data: Uint8Array, size = 1 << 20): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < data.byteLength; i += size) yield data.subarray(i, i + size);
  }

  // random small reads: 4 KiB at random offsets of random regular files (seeded)
  const files: Array<{ path: string; size: number }> = [];
  let x = 42;
  const rnd = (n: number) => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x % Math.max(1, n);
  };
  const reads: Array<{ path: string; offset: number; length: number }> = [];
  function amplification(index: LayerIndex): { perRead: number; ratio: number } {
    let fetched = 0;
    let requested = 0;
    for (const rd of reads) {
      const e = index.entries.get(rd.path);
      const blocks = new Set<number>();
      for (const ext of e?.extents ?? []) if (ext.fileOffset < rd.offset + rd.length && ext.fileOffset + ext.length > rd.offset) blocks.add(ext.block);
      for (const b of blocks) fetched += index.blocks[b]?.compressedSize ?? 0;
      requested += Math.min(rd.length, (e?.size ?? 0) - rd.offset);
    }
    return { perRead: fetched / reads.length, ratio: fetched / requested };
  }

  const rows: string[] = [];
  rows.push('| format | span / chunk | build time | build vs `gzip -d` | index size | % of layer | bytes fetched per 4 KiB read | read amplification |');
  rows.push('|---|---|---|---|---|---|---|---|');
  for (const span of [256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20]) {
    const s = performance.now();
    const idx = await buildZranIndex(chunks(gz), { spanBytes: span });
    const ms = performance.now() - s;
    if (files.length === 0) {
      for (const [p, e] of idx.entries) if (e.type === 'file' && e.size > 0) files.push({ path: p, size: e.size });
      for (let i = 0; i < 2000; i++) {
        const f = files[rnd(files.length)] as { path: string; size: number };
        reads.push({ path: f.path, offset: rnd(Math.max(1, f.size - 4096)), length: 4096 });
      }
    }
    const size = serialiseIndex(idx.data).byteLength;
    const a = amplification(idx);
    rows.push(`| zran | ${span >> 10} KiB | ${ms.toFixed(0)} ms | ${(ms / gunzipMs).toFixed(2)}× | ${mb(size)} MiB | ${((100 * size) / gz.byteLength).toFixed(2)} % | ${(a.perRead / 1024).toFixed(0)} KiB | ${a.ratio.toFixed(1)}× |`);
  }
  {
    const s = performance.now();
    const idx = await buildRawIndex(chunks(tar));
    const ms = performance.now() - s;
    const size = serialiseIndex(idx.data).byteLength;
    const a = amplification(idx);
    rows.push(`| raw (uncompressed layer) | ${idx.data.spanBytes >> 10} KiB | ${ms.toFixed(0)} ms | ${(ms / gunzipMs).toFixed(2)}× | ${mb(size)} MiB | ${((100 * size) / tar.byteLength).toFixed(2)} % | ${(a.perRead / 1024).toFixed(0)} KiB | ${a.ratio.toFixed(1)}× |`);
  }
  {
    // eStargz of the same entries (our test builder, 4 MiB chunks like ctr-remote's default)
    const specs: TarEntrySpec[] = [];
    for await (const e of readTar(chunks(tar))) {
      if (e.type === 'file') {
        const parts: Uint8Array[] = [];
        for await (const c of e.body) parts.push(Uint8Array.from(c));
        specs.push({ type: 'file', name: e.name, content: Buffer.concat(parts), mode: e.mode, uid: e.uid, gid: e.gid, mtime: Math.floor(e.mtimeMs / 1000) });
      } else if (e.type === 'dir') specs.push({ type: 'dir', name: e.name, mode: e.mode });
      else if (e.type === 'symlink') specs.push({ type: 'symlink', name: e.name, target: e.linkName });
      else if (e.type === 'hardlink') specs.push({ type: 'hardlink', name: e.name, target: e.linkName });
    }
    const { blob, tocOffset } = buildEstargz(specs, { chunkSize: 4 << 20 });
    const s = performance.now();
    const idx = await openEstargzIndex(new BufferRangeReader(blob), { layerDigest: sha256Digest(blob) });
    const ms = performance.now() - s;
    const size = blob.byteLength - tocOffset;
    const a = amplification(idx);
    rows.push(`| eStargz (TOC in blob) | 4 MiB chunks | ${ms.toFixed(0)} ms (open TOC) | — | ${mb(size)} MiB | ${((100 * size) / blob.byteLength).toFixed(2)} % | ${(a.perRead / 1024).toFixed(0)} KiB | ${a.ratio.toFixed(1)}× |`);
  }
  console.log(`\`gzip -d\` of the layer: ${gunzipMs.toFixed(0)} ms; ${files.length} regular files; ${reads.length} random 4 KiB reads, no cache.\n`);
  console.log(rows.join('\n'));
  writeFileSync(join(work, 'done'), '');
} finally {
  rmSync(work, { recursive: true, force: true });
}
