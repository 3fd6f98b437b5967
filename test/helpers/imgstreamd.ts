import { spawn, type ChildProcess } from 'node:child_process';
import { access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Lab } from './containerd.ts';
import { freePort } from './tmp.ts';

const MAIN = resolve(fileURLToPath(import.meta.url), '../../../examples/imgstreamd/src/main.ts');

export interface TestImgstreamd {
  /** The snapshotter's gRPC socket (containerd proxy plugin address). */
  readonly socket: string;
  readonly mountPoint: string;
  readonly layerCacheDir: string;
  readonly snapshotterRoot: string;
  readonly metricsUrl: string;
  /** Parsed JSON log records so far (both children and the supervisor). */
  records(): Array<Record<string, unknown>>;
  /** Raw stderr so far (for assertion messages). */
  log(): string;
  /** Waits for a log record matching `pred` (after `from` records). */
  waitFor(pred: (r: Record<string, unknown>) => boolean, options?: { timeoutMs?: number; from?: number }): Promise<Record<string, unknown>>;
  metrics(): Promise<string>;
  /** pid of the current child with that name, from the supervisor's `started` records. */
  childPid(name: 'fuse-server' | 'snapshotter'): number;
  /** SIGTERM and wait; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Starts `imgstreamd` (the supervisor and its two children, from source through tsx) with every
 * path inside the lab, JSON logs and plain HTTP to loopback registries. Teardown: SIGTERM (the
 * FUSE server unmounts), SIGKILL after 20 s; the lab unmounts whatever is left.
 */
export async function startImgstreamd(lab: Lab, extraArgs: string[] = []): Promise<TestImgstreamd> {
  const d = (p: string) => join(lab.dir, 'imgstreamd', p);
  const port = await freePort();
  const socket = d('snapshotter.sock');
  const args = [
    '--conditions=imgstream-source',
    '--import',
    'tsx',
    MAIN,
    `--mount_point=${d('mnt')}`,
    `--socket=${socket}`,
    `--control_socket=${d('control.sock')}`,
    `--snapshotter_root=${d('snapshotter')}`,
    `--layer_cache_dir=${d('layers')}`,
    `--images_in_use_db_path=${d('images-in-use.json')}`,
    `--prefetch_report_dir=${d('prefetch')}`,
    `--metrics_address=127.0.0.1:${port}`,
    '--plain_http_loopback',
    '--log_formatter=json',
    '--log_level=debug',
    ...extraArgs,
  ];
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let raw = '';
  let pending = '';
  const records: Array<Record<string, unknown>> = [];
  child.stderr!.on('data', (b: Buffer) => {
    raw = (raw + b.toString()).slice(-200_000);
    pending += b.toString();
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const l of lines) {
      try {
        records.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        // not a log record (a stack trace)
      }
    }
  });
  const stop = async (): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  lab.defer(stop);
  const waitFor: TestImgstreamd['waitFor'] = async (pred, options = {}) => {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    for (;;) {
      const found = records.slice(options.from ?? 0).find(pred);
      if (found !== undefined) return found;
      if (child.exitCode !== null) throw new Error(`imgstreamd exited ${child.exitCode}:\n${raw}`);
      if (Date.now() > deadline) throw new Error(`imgstreamd: no matching log record:\n${raw.slice(-8000)}`);
      await sleep(50);
    }
  };
  await waitFor((r) => r.msg === 'snapshotter listening');
  await waitFor((r) => r.msg === 'control socket listening');
  await access(socket);
  const metricsUrl = `http://127.0.0.1:${port}/metrics`;
  return {
    socket,
    mountPoint: d('mnt'),
    layerCacheDir: d('layers'),
    snapshotterRoot: d('snapshotter'),
    metricsUrl,
    records: () => records,
    log: () => raw,
    waitFor,
    metrics: async () => (await fetch(metricsUrl)).text(),
    stop,
    childPid(name) {
      const started = records.filter((r) => r.msg === 'started' && r.child === name).at(-1);
      if (started === undefined) throw new Error(`no ${name} started`);
      return Number(started.pid);
    },
  };
}
