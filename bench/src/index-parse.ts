// Layer index parse benchmark: how long a node takes to parse a serialised zran index the first
// time (a daemon's first Prepare of an image: a fresh process, nothing compiled yet), against the
// floor of the same run: gunzip + JSON.parse of the same bytes.
//   node --conditions=imgstream-source --import tsx bench/src/index-parse.ts [--runs N] [LAYER.tar.gz ...]
// Without layer blobs: the layers of the node-app bench image when it was built, else a gzip -6
// layer of /usr/lib/python3.11.
import { execFileSync, spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { gunzipSync } from 'node:zlib';
import { buildZranIndex, parseIndex, serialiseIndex } from '@imgstream/core';

const CHILD = 'IMGSTREAM_BENCH_INDEX_PARSE_CHILD';

/** In a fresh process: parse once (cold), then the floor on the same bytes. */
function child(file: string): void {
  const bytes = readFileSync(file);
  let t = performance.now();
  const index = parseIndex(bytes);
  const parseMs = performance.now() - t;
  t = performance.now();
  const raw = gunzipSync(bytes);
  JSON.parse(raw.subarray(16, 16 + raw.readUInt32BE(12)).toString('utf8'));
  const floorMs = performance.now() - t;
  process.stdout.write(JSON.stringify({ parseMs, floorMs, entries: index.entries.size }));
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 === 1 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

function defaultLayers(work: string): string[] {
  const root = '/var/cache/imgstream-bench/images';
  const dir = existsSync(root) ? readdirSync(root).find((d) => d.startsWith('node-app-')) : undefined;
  if (dir !== undefined) {
    const meta = JSON.parse(readFileSync(join(root, dir, 'meta.json'), 'utf8')) as { ociDir: string; layers: Array<{ digest: string }> };
    return meta.layers.map((l) => join(meta.ociDir, 'blobs', 'sha256', l.digest.slice(7))).filter((p) => statSync(p).size > 1 << 20);
  }
  const tar = join(work, 'layer.tar');
  execFileSync('tar', ['--sort=name', '--numeric-owner', '-cf', tar, '/usr/lib/python3.11'], { stdio: 'ignore' });
  execFileSync('sh', ['-c', `gzip -6 -c ${tar} > ${tar}.gz`]);
  return [`${tar}.gz`];
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const runsAt = args.indexOf('--runs');
  const runs = runsAt === -1 ? 5 : Number(args.splice(runsAt, 2)[1]);
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs takes a positive integer');
  const work = mkdtempSync(join(tmpdir(), 'imgstream-bench-'));
  try {
    const layers = args.length > 0 ? args : defaultLayers(work);
    const rows = ['| layer blob | entries | index (gzip) | parse, fresh process | gunzip + JSON.parse | parse ÷ floor |', '|---|---|---|---|---|---|'];
    for (const [i, layer] of layers.entries()) {
      const index = await buildZranIndex(createReadStream(layer));
      const file = join(work, `${i}.idx`);
      const bytes = serialiseIndex(index.data);
      writeFileSync(file, bytes);
      const parse: number[] = [];
      const floor: number[] = [];
      let entries = 0;
      for (let r = 0; r < runs; r++) {
        const out = spawnSync(process.execPath, [...process.execArgv, process.argv[1] as string, file], { env: { ...process.env, [CHILD]: '1' }, encoding: 'utf8' });
        if (out.status !== 0) throw new Error(`child failed: ${out.stderr}`);
        const m = JSON.parse(out.stdout) as { parseMs: number; floorMs: number; entries: number };
        parse.push(m.parseMs);
        floor.push(m.floorMs);
        entries = m.entries;
      }
      const p = median(parse);
      const f = median(floor);
      rows.push(`| ${layer.split('/').pop()?.slice(0, 12)} | ${entries} | ${(bytes.byteLength / 1e6).toFixed(2)} MB | ${p.toFixed(0)} ms (${Math.min(...parse).toFixed(0)}–${Math.max(...parse).toFixed(0)}) | ${f.toFixed(0)} ms | ${(p / f).toFixed(2)}× |`);
    }
    console.log(`${runs} fresh processes per index; medians (min–max).\n`);
    console.log(rows.join('\n'));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.env[CHILD] === '1') child(process.argv[2] as string);
else await main();
