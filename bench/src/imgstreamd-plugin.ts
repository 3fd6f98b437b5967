// The imgstreamd plug-in for the time-to-ready runner (`StartImgstreamDaemon`, see
// src/scenarios/types.ts):  npm run bench -w bench -- --imgstream src/imgstreamd-plugin.ts
// Starts `imgstreamd` (supervisor + FUSE server + snapshotter) from source in the node network
// namespace with its state in ctx.stateDir. The images must carry an imgstream index (run
// `imgstream index --plain-http REF` after pushing them) or be eStargz; otherwise every layer falls
// back to a full pull.
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { access, readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImgstreamDaemon, ImgstreamDaemonContext } from './scenarios/types.ts';
import { stopChild, tsEntry } from './util/proc.ts';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a !== null && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

function withNodeArgs(entry: string[], nodeArgs: string[]): string[] {
  return [entry[0]!, ...nodeArgs, ...entry.slice(1)];
}

export async function startImgstreamDaemon(ctx: ImgstreamDaemonContext): Promise<ImgstreamDaemon> {
  const d = (p: string) => join(ctx.stateDir, p);
  // The runner starts a fresh containerd for every run: snapshot metadata of an earlier run would
  // collide with its keys. The layer cache and the images-in-use database are kept (imgstream-cached).
  await rm(d('snapshotter'), { recursive: true, force: true });
  const metricsPort = await freePort(); // loopback of the node namespace: the port is free there too
  const argv = [
    'nsenter',
    `--net=${ctx.netnsPath}`,
    '--',
    // node flags for the daemon's processes (the supervisor passes its own to its children), e.g.
    // IMGSTREAMD_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile them
    ...withNodeArgs(tsEntry('examples/imgstreamd/src/main.ts'), (process.env.IMGSTREAMD_NODE_ARGS ?? '').split(/\s+/).filter(Boolean)),
    `--mount_point=${d('mnt')}`,
    `--socket=${ctx.socketPath}`,
    `--control_socket=${d('control.sock')}`,
    `--snapshotter_root=${d('snapshotter')}`,
    `--layer_cache_dir=${d('layers')}`,
    `--images_in_use_db_path=${d('images-in-use.json')}`,
    `--metrics_address=127.0.0.1:${metricsPort}`,
    `--plain_http_registries=${ctx.registryHost}`,
    '--log_formatter=json',
    `--enable_prefetching=${ctx.prefetch}`,
    // every run has a report dir of its own: the prefetch scenario's recording run pushes its
    // report (and pack) to the registry, where the measured runs find it, as a fresh node does
    `--prefetch_report_dir=${d('prefetch-reports')}`,
    ...(ctx.prefetchRecording === true ? ['--prefetch_push=true'] : []),
    // extra daemon flags for experiments, e.g. IMGSTREAMD_ARGS='--background_downloads=false'
    ...(process.env.IMGSTREAMD_ARGS ?? '').split(/\s+/).filter(Boolean),
  ];
  // extra environment for the daemon only, e.g. IMGSTREAMD_ENV='GLIBC_TUNABLES=glibc.malloc.hugetlb=0'
  const extraEnv = Object.fromEntries((process.env.IMGSTREAMD_ENV ?? '').split(/\s+/).filter((kv) => kv.includes('=')).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...extraEnv } });
  let log = '';
  // IMGSTREAMD_LOG=FILE keeps the daemon's whole log (appended), for diagnosis
  const logFile = process.env.IMGSTREAMD_LOG !== undefined && process.env.IMGSTREAMD_LOG !== '' ? createWriteStream(process.env.IMGSTREAMD_LOG, { flags: 'a' }) : undefined;
  if (logFile !== undefined) ctx.cleanup.after(() => new Promise<void>((resolve) => logFile.end(() => resolve())));
  // the 'layer download started' / 'layer downloaded' records, for the download time
  let fullLog = '';
  let partial = '';
  child.stderr!.on('data', (b: Buffer) => {
    logFile?.write(b);
    const lines = (partial + b.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.includes('"layer download') || line.includes('"msg":"prefetch report') || line.includes('"msg":"no prefetch report')) fullLog += `${line}\n`;
    log = (log + b.toString()).slice(-20_000);
  });
  ctx.cleanup.after(() => stopChild(child, 20_000));
  const deadline = Date.now() + 60_000;
  while (!/"msg":"control socket listening"/.test(log) || !(await access(ctx.socketPath).then(() => true, () => false))) {
    if (child.exitCode !== null) throw new Error(`imgstreamd exited ${child.exitCode}:\n${log}`);
    if (Date.now() > deadline) throw new Error(`imgstreamd not ready after 60 s:\n${log}`);
    await sleep(50);
  }
  // /metrics is on the node namespace's loopback
  const metrics = (): Promise<string> =>
    new Promise<string>((resolve, reject) => {
      const c = spawn('nsenter', [`--net=${ctx.netnsPath}`, '--', 'curl', '-fsS', `http://127.0.0.1:${metricsPort}/metrics`]);
      let out = '';
      c.stdout.on('data', (b: Buffer) => (out += b.toString()));
      c.on('error', reject);
      c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`metrics: curl exited ${code}`))));
    });
  // the supervisor and the children it started (JSON log records `{"child", "pid", "msg": "started"}`)
  const pids = (): number[] => {
    const children = new Map<string, number>();
    for (const line of log.split('\n')) {
      try {
        const r = JSON.parse(line) as { msg?: string; child?: string; pid?: number };
        if (r.msg === 'started' && r.child !== undefined && typeof r.pid === 'number') children.set(r.child, r.pid);
      } catch {
        // a partial line
      }
    }
    return [child.pid ?? 0, ...children.values()].filter((p) => p > 0);
  };
  return {
    snapshotter: 'imgstream',
    pids,
    prefetchReportFound: () => fullLog.includes('"msg":"prefetch report found'),
    async stats() {
      const text = await metrics();
      const value = (kind: string) => Number(new RegExp(`imgstream_fetched_bytes_total\\{kind="${kind}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
      return { onDemandBytes: value('on_demand'), backgroundBytes: value('background') };
    },
    // Before stopping, let the background downloads finish (they start once start-up reads go
    // quiet), so the layer cache is complete for the imgstream-cached scenario: every streamed
    // layer has its completion marker in the layer cache (layers cached by an earlier run included).
    async stop() {
      if (ctx.prefetchRecording === true) {
        // the measured runs look for this run's report in the registry: it must be there first
        const until = Date.now() + 120_000;
        while (child.exitCode === null && !fullLog.includes('"msg":"prefetch report pushed') && Date.now() < until) await sleep(200);
        if (!fullLog.includes('"msg":"prefetch report pushed')) throw new Error(`the recording run pushed no prefetch report:\n${log.slice(-4000)}`);
      }
      const downloads = !argv.includes('--background_downloads=false');
      const deadline = Date.now() + (downloads ? 120_000 : 0);
      while (child.exitCode === null && Date.now() < deadline) {
        const text = await metrics().catch(() => '');
        const remote = Number(/imgstream_layers_total\{decision="remote",reason=""\} (\d+)/.exec(text)?.[1] ?? 0);
        const complete = (await readdir(d('layers')).catch(() => [] as string[])).filter((n) => n.endsWith('.complete')).length;
        if (text === '' || complete >= remote || log.includes('background download failed')) break;
        await sleep(200);
      }
      await stopChild(child, 20_000);
      // first background byte to the last layer complete (JSON log records carry `time`, ms)
      let first = Number.POSITIVE_INFINITY;
      let last = Number.NEGATIVE_INFINITY;
      for (const line of fullLog.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const r = JSON.parse(line) as { msg?: string; time?: number };
          if (typeof r.time !== 'number') continue;
          if (r.msg === 'layer download started') first = Math.min(first, r.time);
          if (r.msg?.startsWith('layer downloaded') === true) last = Math.max(last, r.time);
        } catch {
          // a partial line
        }
      }
      return Number.isFinite(first) && Number.isFinite(last) && last >= first ? { downloadMs: last - first } : {};
    },
  };
}
