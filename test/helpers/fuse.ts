import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImgstreamFs } from '@imgstream/fuse';
import type { ImgstreamFsOptions } from '@imgstream/fuse';
import type { Teardown } from './tmp.js';

/**
 * A mounted ImgstreamFs on a fresh temp directory, unmounted (and the directory removed) when
 * the test ends, pass or fail. The test process serves this mount: touch it only from child
 * processes ({@link run}) or with async fs calls, never with sync fs calls.
 */
export async function mountedFs(t: Teardown, options: ImgstreamFsOptions = {}): Promise<ImgstreamFs> {
  const dir = await mkdtemp(join(tmpdir(), 'imgstream-fuse-'));
  const fs = new ImgstreamFs({ mountPoint: `${dir}/mnt`, readTimeoutMs: 5_000, ...options });
  t.after(async () => {
    await fs.close();
    await rm(dir, { recursive: true, force: true });
  });
  await fs.mount();
  return fs;
}

/**
 * A teardown stack: what is registered runs last-first in one hook, each step even when an
 * earlier one failed (node:test runs after hooks first-first and stops at the first failure).
 * Suites: `const td = teardownStack(after)`; tests: `const td = teardownStack((fn) => t.after(fn))`.
 */
export function teardownStack(after: (fn: () => Promise<void>) => void): Teardown {
  const fns: (() => unknown)[] = [];
  after(async () => {
    let first: unknown;
    for (const fn of fns.reverse()) {
      try {
        await fn();
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  });
  return { after: (fn) => fns.push(fn) };
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command in a child process (never blocks this process' event loop), killed after timeoutMs. */
export function run(cmd: string, args: readonly string[], options: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
    if (options.input !== undefined) child.stdin?.on('error', () => undefined).end(options.input);
  });
}

/** Like {@link run} but throws unless the command exits 0; returns stdout. */
export async function sh(cmd: string, args: readonly string[], options: { timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** One line per path: type, mode, owner, size (not for dirs), mtime, link target, links (not for dirs), content hash, xattrs. */
export async function describeTree(dir: string): Promise<Map<string, string>> {
  const lines = (await sh('find', [dir, '-mindepth', '1', '-printf', '%P|%y|%m|%U|%G|%s|%T@|%l|%n\n'], { timeoutMs: 60_000 })).trim().split('\n');
  const out = new Map<string, string>();
  for (const line of lines) {
    const [p, y, m, u, g, s, tm, l, n] = line.split('|');
    out.set(p!, `${y} ${m} ${u}:${g} size=${y === 'd' ? '-' : s} mtime=${Math.floor(Number(tm))} link=${l} nlink=${y === 'd' ? '-' : n}`);
  }
  const sums = (await sh('sh', ['-c', `cd '${dir}' && find . -type f -print0 | xargs -0 sha256sum`], { timeoutMs: 60_000 })).trim().split('\n');
  for (const line of sums) {
    const hash = line.slice(0, 64);
    const p = line.slice(66).replace(/^\.\//, '');
    out.set(p, `${out.get(p)} sha256=${hash}`);
  }
  const x = await run('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '--absolute-names', dir], { timeoutMs: 60_000 });
  let cur = '';
  for (const line of x.stdout.split('\n')) {
    if (line.startsWith('# file: ')) cur = line.slice(8).slice(dir.length + 1);
    else if (line.includes('=') && cur !== '') out.set(cur, `${out.get(cur)} ${line}`);
  }
  return out;
}

/** How many mounts are at `mountPoint` (as /proc/self/mountinfo spells it). */
export async function mountCount(mountPoint: string): Promise<number> {
  const table = await sh('cat', ['/proc/self/mountinfo']);
  return table.split('\n').filter((l) => l.split(' ')[4] === mountPoint).length;
}
