import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { Teardown } from './tmp.ts';

const exec = promisify(execFile);

/**
 * A temp directory whose single teardown runs the deferred functions (last first), then unmounts
 * everything still mounted below it (deepest first), then removes it. Use it for anything that
 * mounts: a temp dir removed while something is mounted below it would reach into the mounts.
 */
export interface Lab {
  readonly dir: string;
  defer(fn: () => unknown): void;
}

export async function makeLab(t: Teardown, prefix = 'imgstream-lab-'): Promise<Lab> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const deferred: Array<() => unknown> = [];
  t.after(async () => {
    for (const fn of deferred.reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error(`lab teardown: ${String(err)}`);
      }
    }
    await unmountBelow(dir);
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, defer: (fn) => deferred.push(fn) };
}

/** Unmounts (lazily) every mount point below `dir`, deepest first. */
export async function unmountBelow(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const points = info
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await exec('umount', ['-l', p]).catch(() => undefined);
  return points;
}

export interface ContainerdOptions {
  /** Proxy snapshotter plugins: name -> unix socket address. */
  proxySnapshotters?: Record<string, string>;
  /** Namespace for ctr commands. Default: `imgstream-test-<random>` (runc keeps state per namespace). */
  namespace?: string;
  /**
   * Enable containerd's CRI plugin with this extra TOML (its `[plugins."io.containerd.grpc.v1.cri"…]`
   * tables). Default: the CRI plugin is disabled.
   */
  criConfig?: string;
  /**
   * Network namespace to run containerd and `ctr` in, as a path (e.g. `/run/netns/NAME`): they are
   * started through `nsenter --net=PATH` (not `ip netns exec`, which remounts /sys and hides the
   * cgroup tree runc needs). Default: the current one.
   */
  netns?: string;
}

export interface TestContainerd {
  /** containerd's gRPC socket. */
  readonly address: string;
  readonly namespace: string;
  /** containerd's pid (for RSS measurements). */
  readonly pid: number;
  /** The argv prefix that runs a command in containerd's network namespace (empty without `netns`). */
  readonly netnsPrefix: readonly string[];
  /**
   * Runs `ctr -a ADDRESS -n NAMESPACE ...args` (or `binary`, e.g. `ctr-remote`); rejects with
   * stdout and stderr on failure.
   */
  ctr(args: string[], options?: { timeoutMs?: number; binary?: string }): Promise<{ stdout: string; stderr: string }>;
  /** containerd's log so far (for assertion messages). */
  log(): string;
}

/**
 * Starts a real containerd (Debian's 1.6) with its own root, state, sockets and config in
 * `lab.dir/containerd`, the CRI plugin disabled, and the given proxy snapshotters. On teardown
 * every task in the namespace is killed and deleted, then containerd is stopped.
 */
export async function startContainerd(lab: Lab, options: ContainerdOptions = {}): Promise<TestContainerd> {
  const base = join(lab.dir, 'containerd');
  const address = join(base, 'containerd.sock');
  const namespace = options.namespace ?? `imgstream-test-${randomBytes(4).toString('hex')}`;
  const proxies = Object.entries(options.proxySnapshotters ?? {})
    .map(([name, sock]) => `[proxy_plugins.${JSON.stringify(name)}]\n  type = "snapshot"\n  address = ${JSON.stringify(sock)}\n`)
    .join('\n');
  const config = `version = 2
root = ${JSON.stringify(join(base, 'root'))}
state = ${JSON.stringify(join(base, 'state'))}
disabled_plugins = [${options.criConfig === undefined ? '"io.containerd.grpc.v1.cri", ' : ''}"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = ${JSON.stringify(address)}

[ttrpc]
  address = ${JSON.stringify(`${address}.ttrpc`)}

[debug]
  address = ${JSON.stringify(`${address}.debug`)}
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = ${JSON.stringify(join(base, 'opt'))}

${proxies}
${options.criConfig ?? ''}`;
  await exec('mkdir', ['-p', base]);
  const configPath = join(base, 'config.toml');
  await writeFile(configPath, config);
  const prefix = options.netns === undefined ? [] : ['nsenter', `--net=${options.netns}`, '--'];
  const inNs = (argv: string[]): [string, string[]] => {
    const all = [...prefix, ...argv];
    return [all[0]!, all.slice(1)];
  };
  const child = spawn(...inNs(['containerd', '--config', configPath]), { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr?.on('data', (d: Buffer) => {
    log = (log + d.toString()).slice(-20_000);
  });

  const ctr: TestContainerd['ctr'] = async (args, opts = {}) => {
    try {
      return await exec(...inNs([opts.binary ?? 'ctr', '-a', address, '-n', namespace, ...args]), { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 });
    } catch (err) {
      const e = err as Error & { stderr?: string; stdout?: string };
      throw new Error(`ctr ${args.join(' ')} failed: ${e.message}\nstdout: ${e.stdout ?? ''}\nstderr: ${e.stderr ?? ''}`);
    }
  };

  lab.defer(async () => {
    if (child.exitCode === null) {
      const tasks = await ctr(['tasks', 'ls', '-q'], { timeoutMs: 10_000 }).catch(() => ({ stdout: '' }));
      for (const id of tasks.stdout.split('\n').filter(Boolean)) {
        await ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 10_000 }).catch(() => undefined);
        await ctr(['tasks', 'delete', '-f', id], { timeoutMs: 10_000 }).catch(() => undefined);
      }
      const containers = await ctr(['containers', 'ls', '-q'], { timeoutMs: 10_000 }).catch(() => ({ stdout: '' }));
      for (const id of containers.stdout.split('\n').filter(Boolean)) await ctr(['containers', 'rm', id], { timeoutMs: 10_000 }).catch(() => undefined);
    }
    await stopChild(child);
    // runc's per-namespace state dir, outside the lab (empty once every task is deleted)
    await rm(join('/run/containerd/runc', namespace), { recursive: true, force: true });
  });

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`containerd exited ${child.exitCode}:\n${log}`);
    try {
      await exec('ctr', ['-a', address, 'version'], { timeout: 5_000 });
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`containerd not ready after 20 s:\n${log}`);
      await sleep(100);
    }
  }
  return { address, namespace, pid: child.pid!, netnsPrefix: prefix, ctr, log: () => log };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}
