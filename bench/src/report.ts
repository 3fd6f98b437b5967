import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderBarChart, svgToPng, type BarGroup } from './chart.ts';
import { totalCompressed, totalUncompressed, type BuiltImage } from './images/build-image.ts';
import { describeProfile } from './net/profiles.ts';
import { physicalLimit, UNAVOIDABLE_ROUND_TRIPS } from './physical-limit.ts';
import { summarize, type BenchResults, type ProfileResults, type ScenarioResults } from './results.ts';
import { isReadAll, SCENARIOS, SCENARIO_LABELS, type ScenarioId } from './scenarios/types.ts';

export const SECTION_TITLE = 'Time to ready';
export const CHART_FILE = 'benchmarks-time-to-ready.png';

const mb = (b: number): string => (b / 1e6).toFixed(1);
const sec = (ms: number): string => (ms / 1000).toFixed(2);
const span = (values: number[]): string => {
  const s = summarize(values);
  return s.n === 1 ? `${sec(s.median)}` : `${sec(s.median)} (${sec(s.min)}–${sec(s.max)})`;
};

/** The bandwidth the physical limit assumes: the profile's rate, or what was measured when unshaped. */
const bandwidthOf = (p: ProfileResults): number => (p.profile.rateBitsPerSecond > 0 ? p.profile.rateBitsPerSecond : p.measured.mbitPerSecond * 1e6);

/**
 * The metric a scenario is judged by: READY for start-up scenarios; for read-all the job's
 * completion, which the runner also records as `readyMs` (the READ-ALL-DONE line).
 */
const metricOf = (_s: ScenarioId, r: { readyMs: number }): number => r.readyMs;

function scenarioRow(results: BenchResults, p: ProfileResults, image: BuiltImage, s: ScenarioId, sr: ScenarioResults | undefined): string {
  const label = SCENARIO_LABELS[s];
  if (sr === undefined || sr.status !== 'ok' || sr.runs.length === 0) {
    const why = sr?.status === 'not available' ? `not available (${sr.reason ?? ''})` : `FAILED: ${(sr?.reason ?? 'no runs').split('\n')[0]!.slice(0, 160)}`;
    return `| ${image.name} | ${p.profile.name} | ${label} | ${why} | | | | | | | |`;
  }
  const times = sr.runs.map((r) => metricOf(s, r));
  const base = p.images[image.name]?.[isReadAll(s) ? 'full-pull-read-all' : 'full-pull'];
  const baseMedian = base?.status === 'ok' && base.runs.length > 0 ? summarize(base.runs.map((r) => metricOf(s, r))).median : NaN;
  const med = summarize(times).median;
  const ratio = Number.isFinite(baseMedian) ? `${(med / baseMedian).toFixed(2)}×` : '–';
  const ws = results.workingSets[image.name];
  const limit = ws === undefined || isReadAll(s) ? null : physicalLimit(image, ws, bandwidthOf(p), p.profile.rttMs);
  const multiple = limit === null ? '–' : `${(med / limit.networkBoundMs).toFixed(1)}×`;
  const pull = span(sr.runs.map((r) => r.pullMs));
  const lastBytes = sr.runs.map((r) => r.lastByteMs).filter((v): v is number => v !== null);
  const lastByte = lastBytes.length === 0 ? '–' : sec(summarize(lastBytes).median);
  const bytes = mb(summarize(sr.runs.map((r) => r.registryBytes)).median);
  const rssNames = Object.keys(sr.runs[0]!.peakRssBytes);
  const rss = rssNames.map((n) => `${n} ${mb(Math.max(...sr.runs.map((r) => r.peakRssBytes[n] ?? 0)))}`).join(', ');
  const ondemand = sr.runs[0]!.onDemandBytes === undefined ? '' : ` (on-demand ${mb(sr.runs[0]!.onDemandBytes)}, background ${mb(sr.runs[0]!.backgroundBytes ?? 0)})`;
  return `| ${image.name} | ${p.profile.name} | ${label} | **${span(times)}** | ${lastByte} | ${pull} | ${ratio} | ${multiple} | ${bytes}${ondemand} | ${rss} | ${sr.runs.length} |`;
}

/** Where the baseline's time goes, from the numbers: transfer at link rate vs the rest of pull vs run. */
function baselineReading(p: ProfileResults, image: BuiltImage): string | null {
  const sr = p.images[image.name]?.['full-pull'];
  if (sr === undefined || sr.status !== 'ok' || sr.runs.length === 0) return null;
  const pull = summarize(sr.runs.map((r) => r.pullMs)).median;
  const ready = summarize(sr.runs.map((r) => r.readyMs)).median;
  const transfer = ((totalCompressed(image) * 8) / bandwidthOf(p)) * 1000;
  const lastBytes = sr.runs.map((r) => r.lastByteMs).filter((v): v is number => v !== null);
  const lastByte = lastBytes.length === 0 ? NaN : summarize(lastBytes).median;
  return `${image.name}, ${p.profile.name}: READY after ${sec(ready)} s. The last of ${mb(totalCompressed(image))} MB arrived at ${sec(lastByte)} s (the link rate alone needs ${sec(transfer)} s); the pull ended at ${sec(pull)} s, so ${sec(Math.max(0, pull - lastByte))} s went to gunzip and writing ${mb(totalUncompressed(image))} MB into overlayfs snapshots after the download; create + start + the entrypoint took ${sec(ready - pull)} s (with the image's files still in the page cache from the unpack).`;
}

const medianOf = (p: ProfileResults, image: BuiltImage, s: ScenarioId, pick: (r: ScenarioResults['runs'][number]) => number | undefined = (r) => r.readyMs): number => {
  const sr = p.images[image.name]?.[s];
  if (sr?.status !== 'ok') return NaN;
  const values = sr.runs.map(pick).filter((v): v is number => v !== undefined);
  return values.length === 0 ? NaN : summarize(values).median;
};
const ratioText = (x: number, base: number): string => (Number.isFinite(x) && Number.isFinite(base) && base > 0 ? `${(x / base).toFixed(2)}×` : '–');
const secText = (ms: number): string => (Number.isFinite(ms) ? `${sec(ms)} s` : '–');

/** One row per image and profile: imgstream's scenarios as ratios to the full pull of the same run. */
function summaryTable(results: BenchResults): string[] {
  const out: string[] = [];
  out.push(
    '| image | network | (a) full pull: READY | (b) cold | (b)/(a) | (b) × limit | (c) layers cached | (c)/(a) | cold + prefetch | prefetch/(a) | cold ÷ prefetch | (d) read-everything (b)/(a) | (b): download + unpack of all layers vs (a) pull |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  );
  for (const p of results.profiles) {
    for (const image of results.images) {
      const a = medianOf(p, image, 'full-pull');
      const aPull = medianOf(p, image, 'full-pull', (r) => r.pullMs);
      const b = medianOf(p, image, 'imgstream-cold');
      const c = medianOf(p, image, 'imgstream-cached');
      const pf = medianOf(p, image, 'imgstream-prefetch');
      const da = medianOf(p, image, 'full-pull-read-all');
      const db = medianOf(p, image, 'imgstream-cold-read-all');
      const dl = medianOf(p, image, 'imgstream-cold', (r) => r.downloadMs);
      const ws = results.workingSets[image.name];
      const limit = ws === undefined ? NaN : physicalLimit(image, ws, bandwidthOf(p), p.profile.rttMs).networkBoundMs;
      const multiple = Number.isFinite(b) && Number.isFinite(limit) ? `${(b / limit).toFixed(1)}×` : '–';
      const speedup = Number.isFinite(b) && Number.isFinite(pf) ? `${(b / pf).toFixed(2)}×` : '–';
      const download = Number.isFinite(dl) ? `${sec(dl)} s vs ${secText(aPull)} (${ratioText(dl, aPull)})` : '–';
      out.push(`| ${image.name} | ${p.profile.name} | ${secText(a)} | ${secText(b)} | **${ratioText(b, a)}** | ${multiple} | ${secText(c)} | ${ratioText(c, a)} | ${secText(pf)} | ${ratioText(pf, a)} | **${speedup}** | ${ratioText(db, da)} | ${download} |`);
    }
  }
  return out;
}

export function renderSection(results: BenchResults): string {
  const out: string[] = [];
  const env = results.environment;
  out.push(`## ${SECTION_TITLE}`, '');
  out.push(
    `What a user feels: from "start this image on a fresh node" to the workload's first useful output (READY), and to the end of a job that reads the whole image. Generated by \`bench/src/report.ts\` from \`bench/results/${results.options.quick ? 'time-to-ready-quick' : 'time-to-ready'}.json\` on ${results.finished.slice(0, 16).replace('T', ' ')} UTC (\`${results.command}\`: ${results.options.runs} runs per scenario). Every run starts cold: a fresh containerd root (empty content store and snapshots), \`echo 3 > /proc/sys/vm/drop_caches\`.`,
    '',
  );
  out.push(`![time to READY per scenario, image and network profile](${CHART_FILE})`, '');

  out.push('### Summary', '');
  out.push(
    'Medians of the runs below. Ratios are to the full pull (a) of the same profile and run: under 1 is sooner. "cold ÷ prefetch" is how many times sooner the start is with the image\'s prefetch report than without it. "× limit" is (b) over the physical limit. The last column is how long the background download of every layer took in the cold runs (first byte to the last layer unpacked and complete in the local layer cache; it starts once the start-up reads go quiet) against the full pull\'s `ctr images pull`.',
    '',
  );
  out.push(...summaryTable(results), '');

  out.push('### Results', '');
  out.push('Times in seconds from the start of the pull: median (min–max); "last registry byte" is when the network phase ended (seen at the proxy). "vs (a)" is the ratio to the full-pull baseline of the same profile and run; "× limit" is the time over the physical limit below. Registry MB is counted at the delay proxy (bytes from the registry to the node). Peak RSS in MB (VmHWM).', '');
  out.push('| image | network | scenario | time to READY / job done | last registry byte | pull done | vs (a) | × limit | registry MB | peak RSS MB | runs |', '|---|---|---|---|---|---|---|---|---|---|---|');
  for (const p of results.profiles) {
    for (const image of results.images) {
      for (const s of SCENARIOS) out.push(scenarioRow(results, p, image, s, p.images[image.name]?.[s]));
    }
  }
  out.push('');

  out.push('### Physical limit', '');
  out.push(
    `For each image the entrypoint was run once in a chroot on a plain overlay of its rootfs (local disk, cold page cache) under \`strace -f -e trace=openat,read,pread64\`, then \`fincore\` counted the image's bytes in the page cache (this includes mmap'd shared libraries, which \`read()\` misses, and kernel read-ahead). The bound is \`wire bytes / bandwidth + RTT × ${UNAVOIDABLE_ROUND_TRIPS}\` (TCP connect, manifest, config, one parallel round of range reads), where wire bytes are the resident bytes scaled by the image's gzip ratio. It ignores CPU: "cold local start" is what the same entrypoint takes with everything on local disk and a cold page cache, a floor no network can beat.`,
    '',
  );
  out.push('| image | layers | gzip MB | uncompressed MB | entries | files opened before READY | bytes resident | read() bytes | cold / warm local start | bound ' + results.profiles.map((p) => p.profile.name).join(' / ') + ' |');
  out.push('|---|---|---|---|---|---|---|---|---|---|');
  for (const image of results.images) {
    const ws = results.workingSets[image.name];
    if (ws === undefined) continue;
    const bounds = results.profiles.map((p) => `${sec(physicalLimit(image, ws, bandwidthOf(p), p.profile.rttMs).networkBoundMs)} s`).join(' / ');
    const entries = image.layers.reduce((s, l) => s + l.entries, 0);
    out.push(
      `| ${image.name} | ${image.layers.length} | ${mb(totalCompressed(image))} | ${mb(totalUncompressed(image))} | ${entries} | ${ws.files} (${mb(ws.openedFileBytes)} MB) | ${mb(ws.residentBytes)} MB (${((100 * ws.residentBytes) / totalUncompressed(image)).toFixed(1)} %) | ${mb(ws.readBytes)} MB | ${sec(ws.coldLocalMs)} / ${sec(ws.warmLocalMs)} s | ${bounds} |`,
    );
  }
  out.push('');

  out.push('### Reading', '');
  for (const p of results.profiles) {
    for (const image of results.images) {
      const r = baselineReading(p, image);
      if (r !== null) out.push(`- ${r}`);
    }
  }
  // How noisy was it? The widest min–max spread of the baseline, and (d) faster than (a) is a tell.
  let widest = 0;
  let inverted = 0;
  const netRatios: number[] = [];
  for (const p of results.profiles) {
    for (const image of results.images) {
      const a = p.images[image.name]?.['full-pull'];
      const d = p.images[image.name]?.['full-pull-read-all'];
      if (a?.status === 'ok' && a.runs.length > 0) {
        const sa = summarize(a.runs.map((r) => r.readyMs));
        widest = Math.max(widest, (sa.max - sa.min) / sa.median);
        const lb = a.runs.map((r) => r.lastByteMs).filter((v): v is number => v !== null);
        if (lb.length > 0) netRatios.push(summarize(lb).median / (((totalCompressed(image) * 8) / bandwidthOf(p)) * 1000));
        if (d?.status === 'ok' && d.runs.length > 0 && summarize(d.runs.map((r) => r.readyMs)).median < sa.median) inverted++;
      }
    }
  }
  out.push(
    `- Noise: the baseline's min–max spread reaches ${(widest * 100).toFixed(0)} % of its median${inverted > 0 ? `, and in ${inverted} image/profile pair(s) the read-everything job (which does strictly more work after the same pull) finished before (a) printed READY` : ''}. The pull is CPU-bound (gunzip and file creation) on a 2-core machine that other work shared during the run (load average ${results.environment.loadAverageAtEnd} at the end), so compare medians and treat differences under ~30 % as noise. The network phase is steadier: the last registry byte came ${netRatios.length === 0 ? '–' : `${Math.min(...netRatios).toFixed(2)}–${Math.max(...netRatios).toFixed(2)}×`} the time the link rate alone needs (the rest is connection setup, round trips and containerd's request pattern).`,
  );
  const unavailable = results.profiles.some((p) => Object.values(p.images).some((i) => i['imgstream-cold']?.status === 'not available' && i['imgstream-cold']?.reason === 'imgstreamd does not exist yet'));
  if (unavailable) {
    out.push(
      '- The imgstream scenarios (b) cold, (c) layers cached, (d) read-everything on (b) and prefetch are **not available yet**: they need the node daemon `imgstreamd`. The runner has the plug-in point (`StartImgstreamDaemon` in `bench/src/scenarios/types.ts`, set in `bench/src/main.ts`); once it starts the daemon, these rows get real numbers, their ratio to (a) and their multiple of the physical limit.',
    );
  }
  out.push(
    '- The gap between (a) and the physical limit is what streaming can win: the workload needs only the resident fraction of the image, but a full pull moves and unpacks all of it before the first instruction runs.',
    '',
  );

  out.push('### Network emulation', '');
  out.push(
    'The registry (a real `docker-registry` 2.8) runs in a network namespace the benchmark creates, with its blob storage: the registry answers blob downloads with a 307 to an nginx beside it that serves its blob files, as Docker Hub, GHCR, ECR and GCR send them to a CDN or object storage (distribution serving a range itself reads 4 MiB whatever the range, ~7 ms of CPU per request here, taken from the node under test). containerd, `ctr` and the delay proxy run in a second one (`nsenter --net`, which keeps the cgroup tree runc needs). The namespaces are joined by a veth pair with link-local 169.254.x.1/.2 addresses that exist only inside them. This kernel has no `sch_netem`, so the rate comes from `tbf` on both veth ends and the RTT from a user-space TCP proxy on the node\'s loopback that holds the node\'s bytes (requests) for the whole RTT and passes the answers straight through, so every request is answered one RTT later, as with half the delay each way, while the bulk direction costs the node\'s CPUs no timers (chunks are time-stamped and released after the delay, pipelined; a new connection\'s first bytes wait one extra RTT for the handshake). Not emulated: TCP slow start and loss at the emulated RTT (the real TCP legs are sub-millisecond). Verified before each profile\'s runs, from the node namespace through the proxy:',
    '',
  );
  out.push('| profile | qdisc (node end) | connect + first exchange | RTT (median of 15) | 100 MiB download | achieved |', '|---|---|---|---|---|---|');
  for (const p of results.profiles) {
    const m = p.measured;
    out.push(`| ${describeProfile(p.profile)} | \`${p.qdisc.replace(/\s+/g, ' ')}\` | ${m.firstExchangeMs.toFixed(1)} ms | ${m.rttMs.toFixed(2)} ms | ${sec(m.downloadMs)} s | ${m.mbitPerSecond.toFixed(0)} Mbit/s |`);
  }
  out.push('');

  out.push('### Images', '');
  out.push('Built here without a Docker engine from Debian 12\'s archive (`apt-get download`, `dpkg-deb -x`, .pyc compiled with the image\'s own Python as unchecked-hash) and npm (`npm ci` from the lock in `bench/images/node-app`): reproducible tars (sorted, root-owned, fixed mtime), `gzip -n` layers, cached under `/var/cache/imgstream-bench` keyed by a hash of the recipe, pushed with `skopeo copy`.', '');
  out.push('| image | description | layers (gzip MB / uncompressed MB) |', '|---|---|---|');
  for (const image of results.images) {
    out.push(`| ${image.name} | ${image.description} | ${image.layers.map((l) => `${l.name} ${mb(l.compressedBytes)}/${mb(l.uncompressedBytes)}`).join(', ')} |`);
  }
  out.push('');

  out.push('### Environment', '');
  out.push(`- Kernel ${env.kernel}, ${env.cpus}, ${(env.memoryBytes / 2 ** 30).toFixed(0)} GiB RAM, Debian ${env.versions.debian}; load average at the end ${env.loadAverageAtEnd} (the machine is shared with other work: expect noise in the spread).`);
  out.push(`- ${Object.entries(env.versions).filter(([k]) => k !== 'debian').map(([k, v]) => `${k}: ${v}`).join('; ')}.`);
  out.push('');
  out.push('### Reproduce', '');
  out.push('As root on Debian 12, from the repository root (`bench/setup.sh`, called by the command, installs what the benchmark needs):', '');
  out.push('```sh', 'npm ci', 'npm run bench -w bench -- --quick     # python-scipy, cross-region, 1 run: about 4 minutes (images cached)', 'npm run bench -w bench                 # every image and profile, 5 runs', 'npm run bench -w bench -- --images node-app,many-layers --profiles cross-region --runs 3', '```', '');
  return out.join('\n');
}

function chartGroups(results: BenchResults): BarGroup[] {
  const groups: BarGroup[] = [];
  for (const image of results.images) {
    for (const p of results.profiles) {
      const ws = results.workingSets[image.name];
      const bars: BarGroup['bars'] = [];
      for (const s of ['full-pull', 'imgstream-cold', 'imgstream-cached', 'imgstream-prefetch', 'full-pull-read-all', 'imgstream-cold-read-all'] as const) {
        const sr = p.images[image.name]?.[s];
        if (sr?.status === 'ok' && sr.runs.length > 0) {
          const sm = summarize(sr.runs.map((r) => metricOf(s, r)));
          bars.push({ label: SCENARIO_LABELS[s], valueMs: sm.median, minMs: sm.min, maxMs: sm.max });
        } else {
          bars.push({ label: SCENARIO_LABELS[s], valueMs: null });
        }
      }
      if (ws !== undefined) bars.push({ label: 'physical limit (network)', valueMs: physicalLimit(image, ws, bandwidthOf(p), p.profile.rttMs).networkBoundMs });
      groups.push({ title: `${image.name} · ${p.profile.name}`, bars });
    }
  }
  return groups;
}

/** Rewrites the "Time to ready" section of docs/benchmarks.md (other sections are kept) and the chart. */
export async function writeReport(results: BenchResults, repoRoot: string): Promise<string[]> {
  const docPath = join(repoRoot, 'docs', 'benchmarks.md');
  const section = renderSection(results);
  const existing = existsSync(docPath) ? await readFile(docPath, 'utf8') : '# imgstream benchmarks\n\nEach section is written by its own benchmark; see the command at its end.\n';
  await writeFile(docPath, replaceSection(existing, SECTION_TITLE, section));
  const svg = renderBarChart('Time to READY / job done (s, median, whiskers min–max) — grey: not run', chartGroups(results));
  const png = join(repoRoot, 'docs', CHART_FILE);
  await svgToPng(svg, png);
  return [docPath, png];
}

/** Replaces `## TITLE` up to the next `## ` heading (or the end), or appends it. */
export function replaceSection(doc: string, title: string, section: string): string {
  const lines = doc.split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${title}`);
  const body = section.endsWith('\n') ? section : `${section}\n`;
  if (start < 0) return `${doc.replace(/\n*$/, '\n\n')}${body}`;
  let end = lines.length;
  for (let i = start + 1; i < lines.length; i++) {
    if (/^## /.test(lines[i]!)) {
      end = i;
      break;
    }
  }
  const before = lines.slice(0, start).join('\n');
  const after = lines.slice(end).join('\n');
  return `${before}${before === '' ? '' : '\n'}${body}${after === '' ? '' : `\n${after}`}`;
}
