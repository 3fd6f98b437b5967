import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface, type Interface } from 'node:readline';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** The repository root (tsx and the workspaces resolve from here). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** `/run/netns/NAME`, the bind mount `ip netns add` makes. */
export const netnsPath = (name: string): string => `/run/netns/${name}`;

/**
 * The argv prefix that runs a command in network namespace `ns` (null = the current one).
 * `nsenter --net` changes only the network namespace; `ip netns exec` would also remount /sys and
 * hide the cgroup tree runc needs.
 */
export const inNetns = (ns: string | null): string[] => (ns === null ? [] : ['nsenter', `--net=${netnsPath(ns)}`, '--']);

/** argv that runs one of our TypeScript entry points with tsx (run with cwd = REPO_ROOT). */
export function tsEntry(relFromRepo: string): string[] {
  return [process.execPath, '--conditions=imgstream-source', '--import', 'tsx', `${REPO_ROOT}${relFromRepo}`];
}

export async function run(argv: string[], options: { timeoutMs?: number; cwd?: string; input?: string } = {}): Promise<{ stdout: string; stderr: string }> {
  const [cmd, ...args] = argv;
  try {
    return await execFileP(cmd!, args, { timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, cwd: options.cwd ?? REPO_ROOT });
  } catch (err) {
    const e = err as Error & { stderr?: string; stdout?: string };
    throw new Error(`${argv.join(' ')} failed: ${e.message}\nstderr: ${(e.stderr ?? '').slice(-4000)}`);
  }
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMs`. Resolves once it has exited. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** A child that speaks one JSON object per stdout line (our proxy and probe processes). */
export class LineChild {
  readonly child: ChildProcess;
  private readonly lines: string[] = [];
  private readonly waiters: Array<(line: string | null) => void> = [];
  private readonly rl: Interface;
  private stderr = '';
  private ended = false;

  constructor(argv: string[], options: SpawnOptions = {}) {
    const [cmd, ...args] = argv;
    this.child = spawn(cmd!, args, { cwd: REPO_ROOT, ...options, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-8000);
    });
    this.rl = createInterface({ input: this.child.stdout! });
    this.rl.on('line', (line) => {
      const w = this.waiters.shift();
      if (w) w(line);
      else this.lines.push(line);
    });
    this.rl.on('close', () => {
      this.ended = true;
      for (const w of this.waiters.splice(0)) w(null);
    });
  }

  /** The next stdout line as JSON; rejects if the process ends first or after `timeoutMs`. */
  async next<T>(timeoutMs = 30_000): Promise<T> {
    const queued = this.lines.shift();
    const line =
      queued ??
      (this.ended
        ? null
        : await new Promise<string | null>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms; stderr: ${this.stderr}`)), timeoutMs);
            this.waiters.push((l) => {
              clearTimeout(timer);
              resolve(l);
            });
          }));
    if (line === null) throw new Error(`process ended (${this.child.exitCode ?? this.child.signalCode}); stderr: ${this.stderr}`);
    return JSON.parse(line) as T;
  }

  async request<T>(command: string, timeoutMs?: number): Promise<T> {
    this.child.stdin!.write(`${command}\n`);
    return this.next<T>(timeoutMs);
  }

  stderrTail(): string {
    return this.stderr;
  }

  /** Closes stdin (our processes exit on that), then stops it. */
  async stop(): Promise<void> {
    this.child.stdin!.end();
    const exited = this.child.exitCode !== null || this.child.signalCode !== null;
    if (!exited) {
      await Promise.race([new Promise((r) => this.child.once('exit', r)), new Promise((r) => setTimeout(r, 2000))]);
    }
    await stopChild(this.child);
  }
}
