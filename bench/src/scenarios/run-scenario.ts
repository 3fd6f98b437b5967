import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeLab, startContainerd, type TestContainerd } from '../../../test/helpers/containerd.ts';
import type { BuiltImage } from '../images/build-image.ts';
import type { EmulatedNetwork } from '../net/emulated-network.ts';
import type { Cleanup } from '../util/cleanup.ts';
import { netnsPath, run } from '../util/proc.ts';
import { isReadAll, type RunResult, type ScenarioId, type StartImgstreamDaemon } from './types.ts';

export interface ScenarioContext {
  readonly net: EmulatedNetwork;
  /** `127.0.0.1:PORT`: the registry through the delay proxy, from the node namespace. */
  readonly registryHost: string;
  readonly image: BuiltImage;
  /** Where per-image state that outlives one run lives (imgstream's warm layer cache). */
  readonly stateRoot: string;
  readonly imgstream?: StartImgstreamDaemon;
  /** Give up on one run after this long. */
  readonly runTimeoutMs: number;
  /** The enclosing teardown stack (each run makes a nested one, so a signal stops it too). */
  readonly cleanup: Cleanup;
}

/** The read-everything job: checksum every file of the rootfs with a bind-mounted static busybox. */
const READ_ALL_SCRIPT = 'cd / && B=/.imgstream-bench/busybox && $B find . -xdev -path ./.imgstream-bench -prune -o -type f -print0 | $B xargs -0 $B sha256sum | $B wc -l | $B sed "s/^/READ-ALL-DONE files=/"';

/** Empties the page cache, dentries and inodes: the node reads everything from disk or network. */
export async function dropCaches(): Promise<void> {
  await run(['sync']);
  await writeFile('/proc/sys/vm/drop_caches', '3\n');
}

/** Peak resident set of a live process, bytes (VmHWM), or 0 if it is gone. */
export async function peakRss(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return m === null ? 0 : Number(m[1]) * 1024;
  } catch {
    return 0;
  }
}

interface Timed {
  readonly exitMs: number;
  readonly markMs: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly maxRssBytes: number;
}

/**
 * Runs argv under GNU time (for its peak RSS), noting when stdout first matches `mark`.
 * Times are relative to `t0` (performance.now()).
 */
function timed(argv: string[], t0: number, mark: RegExp | null, timeoutMs: number): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', 'IMGSTREAM_BENCH_MAXRSS_KB=%M', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let markMs: number | null = null;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (markMs === null && mark !== null && mark.test(stdout)) markMs = performance.now() - t0;
    });
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-20_000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const exitMs = performance.now() - t0;
      const rss = /IMGSTREAM_BENCH_MAXRSS_KB=(\d+)/.exec(stderr);
      if (code !== 0) {
        reject(new Error(`${argv.join(' ')} exited ${code ?? signal}:\nstdout: ${stdout.slice(-2000)}\nstderr: ${stderr.slice(-4000)}`));
        return;
      }
      resolve({ exitMs, markMs, stdout, stderr, maxRssBytes: rss === null ? 0 : Number(rss[1]) * 1024 });
    });
  });
}

function ctrArgv(ctd: TestContainerd, binary: string, args: string[]): string[] {
  return [...ctd.netnsPrefix, binary, '-a', ctd.address, '-n', ctd.namespace, ...args];
}

function runArgs(ref: string, id: string, readAll: boolean, snapshotter: string | null): string[] {
  const args = ['run', '--rm'];
  if (snapshotter !== null) args.push('--snapshotter', snapshotter);
  if (readAll) args.push('--mount', 'type=bind,src=/usr/bin/busybox,dst=/.imgstream-bench/busybox,options=rbind:ro');
  args.push(ref, id);
  if (readAll) args.push('/.imgstream-bench/busybox', 'sh', '-c', READ_ALL_SCRIPT);
  return args;
}

/**
 * One cold run of `scenario`: a fresh containerd root (and daemon state unless cached), dropped
 * page cache, then pull + create + start until READY (or until the read-all job is done).
 */
export async function runScenario(ctx: ScenarioContext, scenario: ScenarioId, index: number): Promise<RunResult> {
  if (scenario === 'full-pull' || scenario === 'full-pull-read-all') return runFullPull(ctx, isReadAll(scenario), index);
  if (ctx.imgstream === undefined) throw new Error(`${scenario}: imgstreamd is not available`);
  return runImgstream(ctx, ctx.imgstream, scenario, index);
}

async function runFullPull(ctx: ScenarioContext, readAll: boolean, index: number): Promise<RunResult> {
  const c = ctx.cleanup.scope();
  try {
    const lab = await makeLab(c, 'imgstream-bench-');
    const ctd = await startContainerd(lab, { netns: netnsPath(ctx.net.nodeNs), namespace: `imgstream-bench-${index}` });
    const ref = `${ctx.registryHost}/${ctx.image.name}:${ctx.image.tag}`;
    await dropCaches();
    await ctx.net.resetStats();
    const resetAt = performance.now();
    const t0 = performance.now();
    const pull = await timed(ctrArgv(ctd, 'ctr', ['images', 'pull', '--plain-http', ref]), t0, null, ctx.runTimeoutMs);
    const mark = readAll ? /READ-ALL-DONE/ : /READY/;
    const runRes = await timed(ctrArgv(ctd, 'ctr', runArgs(ref, `bench-${index}`, readAll, null)), t0, mark, ctx.runTimeoutMs);
    if (runRes.markMs === null) throw new Error(`container never printed ${mark}: ${runRes.stdout}\n${runRes.stderr}`);
    const stats = await ctx.net.stats();
    return {
      pullMs: pull.exitMs,
      readyMs: runRes.markMs,
      doneMs: runRes.exitMs,
      registryBytes: stats.downstreamBytes,
      lastByteMs: stats.lastDownstreamMs === null ? null : stats.lastDownstreamMs - (t0 - resetAt),
      peakRssBytes: { containerd: await peakRss(ctd.pid), 'ctr pull': pull.maxRssBytes },
      output: runRes.stdout.trim().slice(0, 200),
    };
  } finally {
    await c.run();
  }
}

async function runImgstream(ctx: ScenarioContext, start: StartImgstreamDaemon, scenario: ScenarioId, index: number): Promise<RunResult> {
  const readAll = isReadAll(scenario);
  const cached = scenario === 'imgstream-cached';
  const stateDir = join(ctx.stateRoot, `imgstream-${ctx.image.name}-${cached ? 'cached' : `cold-${index}`}`);
  if (!cached) await run(['rm', '-rf', stateDir]);
  await mkdir(stateDir, { recursive: true });
  const c = ctx.cleanup.scope();
  try {
    const lab = await makeLab(c, 'imgstream-bench-');
    const socketPath = join(lab.dir, 'imgstream.sock');
    const daemon = await start({ netnsPath: netnsPath(ctx.net.nodeNs), stateDir, socketPath, registryHost: ctx.registryHost, prefetch: scenario === 'imgstream-prefetch', prefetchRecording: scenario === 'imgstream-prefetch' && index === 0, cleanup: c });
    c.after(() => daemon.stop());
    const ctd = await startContainerd(lab, { netns: netnsPath(ctx.net.nodeNs), namespace: `imgstream-bench-${index}`, proxySnapshotters: { [daemon.snapshotter]: socketPath } });
    const ref = `${ctx.registryHost}/${ctx.image.name}:${ctx.image.tag}`;
    await dropCaches();
    await ctx.net.resetStats();
    const resetAt = performance.now();
    const t0 = performance.now();
    const pullCmd = daemon.pullArgs?.(ref) ?? { binary: 'ctr-remote', args: ['images', 'rpull', '--plain-http', '--snapshotter', daemon.snapshotter, ref] };
    const pull = await timed(ctrArgv(ctd, pullCmd.binary, pullCmd.args), t0, null, ctx.runTimeoutMs);
    const mark = readAll ? /READ-ALL-DONE/ : /READY/;
    const runRes = await timed(ctrArgv(ctd, 'ctr', runArgs(ref, `bench-${index}`, readAll, daemon.snapshotter)), t0, mark, ctx.runTimeoutMs);
    if (runRes.markMs === null) throw new Error(`container never printed ${mark}: ${runRes.stdout}\n${runRes.stderr}`);
    if (scenario === 'imgstream-prefetch' && index > 0 && daemon.prefetchReportFound?.() === false) throw new Error('the daemon found no prefetch report: this run would measure a cold start');
    const stats = await ctx.net.stats();
    const rss: Record<string, number> = { containerd: await peakRss(ctd.pid), 'ctr pull': pull.maxRssBytes };
    for (const pid of daemon.pids()) rss[`imgstreamd[${pid}]`] = await peakRss(pid);
    const ds = await daemon.stats?.();
    // stopping waits for the background downloads; their duration is part of the result
    const stopped = await daemon.stop();
    const downloadMs = stopped?.downloadMs;
    return {
      pullMs: pull.exitMs,
      readyMs: runRes.markMs,
      doneMs: runRes.exitMs,
      registryBytes: stats.downstreamBytes,
      lastByteMs: stats.lastDownstreamMs === null ? null : stats.lastDownstreamMs - (t0 - resetAt),
      peakRssBytes: rss,
      ...(ds === undefined ? {} : { onDemandBytes: ds.onDemandBytes, backgroundBytes: ds.backgroundBytes }),
      ...(downloadMs === undefined ? {} : { downloadMs }),
      output: runRes.stdout.trim().slice(0, 200),
    };
  } finally {
    await c.run();
  }
}
