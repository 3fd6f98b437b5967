// Range-read latency and throughput of imgstream's RegistryClient vs curl against the same local
// docker-registry. Reproduce with:
//   node --conditions=imgstream-source --import tsx bench/registry-range.ts [--small N] [--large N]
// Both sides reuse one keep-alive connection (curl: one process, one transfer per range, `--next`);
// curl's per-transfer time_total excludes its process start-up.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RegistryClient, parseReference, type RangeReader } from '@imgstream/core';
import { startRegistry } from '../test/helpers/registry.ts';
import { tempDir } from '../test/helpers/tmp.ts';

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i === -1 ? fallback : Number(args[i + 1]);
};
const SMALL = arg('--small', 2000);
const LARGE = arg('--large', 128);
const ROUNDS = arg('--rounds', 4);
const BLOB_BYTES = 64 * 1024 * 1024;
const SMALL_BYTES = 4096;
const LARGE_BYTES = 1024 * 1024;

const afters: (() => unknown)[] = [];
const t = { after: (fn: () => unknown) => void afters.push(fn) };

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

function offsets(n: number, len: number, seed: number): number[] {
  let x = seed;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out.push(Math.floor((x / 2147483648) * ((BLOB_BYTES - len) / 4096)) * 4096);
  }
  return out;
}

async function curlTimes(url: string, ranges: number[], len: number, dir: string): Promise<number[]> {
  const lines: string[] = [];
  ranges.forEach((off, i) => {
    if (i > 0) lines.push('next');
    lines.push(`url = "${url}"`, `range = "${off}-${off + len - 1}"`, 'output = "/dev/null"', 'silent', 'fail', 'write-out = "%{time_total}\\n"');
  });
  const cfg = join(dir, `curl-${len}.cfg`);
  await writeFile(cfg, lines.join('\n') + '\n');
  const { stdout } = await promisify(execFile)('curl', ['-K', cfg], { maxBuffer: 64 << 20 });
  const times = stdout.trim().split('\n').map((s) => Number(s) * 1000);
  if (times.length !== ranges.length || times.some((v) => !Number.isFinite(v))) throw new Error(`curl gave ${times.length} timings`);
  return times;
}

async function clientTimes(reader: RangeReader, ranges: number[], len: number): Promise<number[]> {
  const times: number[] = [];
  for (const off of ranges) {
    const start = performance.now();
    const got = await reader.readRange(off, len);
    times.push(performance.now() - start);
    if (got.length !== len) throw new Error('short read');
  }
  return times;
}

try {
  const dir = await tempDir(t, 'imgstream-bench-');
  const reg = await startRegistry(t);
  const client = new RegistryClient({ plainHttpLoopback: true });
  t.after(() => client.close());
  const ref = parseReference(`${reg.host}/bench/blob:v1`);
  const data = randomBytes(BLOB_BYTES);
  const d = await client.pushBlob(ref, data);
  const url = `${reg.url}/v2/${ref.repository}/blobs/${d.digest}`;
  const reader = client.blobReader(ref, d);
  // warm-up both sides (connections, page cache)
  await clientTimes(reader, offsets(50, SMALL_BYTES, 7), SMALL_BYTES);
  await curlTimes(url, offsets(50, SMALL_BYTES, 7), SMALL_BYTES, dir);
  // correctness spot check
  const probe = await reader.readRange(12345, 4096);
  if (!Buffer.from(probe).equals(data.subarray(12345, 12345 + 4096))) throw new Error('wrong bytes');

  // Alternate the two sides in rounds so background load affects both alike.
  const cs: number[] = [];
  const us: number[] = [];
  const cl: number[] = [];
  const ul: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const small = offsets(Math.ceil(SMALL / ROUNDS), SMALL_BYTES, 42 + round);
    cs.push(...(await clientTimes(reader, small, SMALL_BYTES)));
    us.push(...(await curlTimes(url, small, SMALL_BYTES, dir)));
    const large = offsets(Math.ceil(LARGE / ROUNDS), LARGE_BYTES, 99 + round);
    cl.push(...(await clientTimes(reader, large, LARGE_BYTES)));
    ul.push(...(await curlTimes(url, large, LARGE_BYTES, dir)));
  }
  cs.sort((a, b) => a - b);
  us.sort((a, b) => a - b);
  const mibps = (times: number[]) => (times.length * LARGE_BYTES) / (1024 * 1024) / (times.reduce((a, b) => a + b, 0) / 1000);

  // concurrency: 8 readers in parallel over the pooled agent (no curl counterpart)
  const start = performance.now();
  const par = offsets(LARGE, LARGE_BYTES, 5);
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < par.length) await reader.readRange(par[next++] as number, LARGE_BYTES);
    }),
  );
  const parMibps = (LARGE * LARGE_BYTES) / (1024 * 1024) / ((performance.now() - start) / 1000);

  const rows = [
    ['4 KiB reads p50 (ms)', quantile(cs, 0.5), quantile(us, 0.5)],
    ['4 KiB reads p99 (ms)', quantile(cs, 0.99), quantile(us, 0.99)],
    ['1 MiB reads (MiB/s)', mibps(cl), mibps(ul)],
  ] as const;
  console.log(`registry range reads: ${cs.length} x 4 KiB, ${cl.length} x 1 MiB random offsets in a 64 MiB blob, ${ROUNDS} alternating rounds, node ${process.version}`);
  console.log('| metric | imgstream | curl | ratio imgstream/curl |');
  console.log('|---|---|---|---|');
  for (const [name, a, b] of rows) console.log(`| ${name} | ${a.toFixed(3)} | ${b.toFixed(3)} | ${(a / b).toFixed(2)} |`);
  console.log(`| 1 MiB reads, 8 concurrent (MiB/s) | ${parMibps.toFixed(1)} | - | - |`);
} finally {
  for (const fn of afters.reverse()) await fn();
}
