// A private containerd (own root, state, socket and config in a temp dir) for tests, plus a
// ctr-remote wrapper bound to it. Stopped when the test ends.
import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { tempDir, type Teardown } from './tmp.ts';

const run = promisify(execFile);

export interface TestContainerd {
  readonly address: string;
  readonly dir: string;
  /** Runs `ctr-remote -a ADDRESS -n imgstream-test ARGS...`. */
  ctr(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export async function startContainerd(t: Teardown): Promise<TestContainerd> {
  const dir = await tempDir(t, 'imgstream-ctrd-');
  const address = join(dir, 'containerd.sock');
  const config = [
    'version = 2',
    `root = "${join(dir, 'root')}"`,
    `state = "${join(dir, 'state')}"`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
    '[grpc]',
    `  address = "${address}"`,
    '[ttrpc]',
    `  address = "${join(dir, 'containerd.sock.ttrpc')}"`,
    '[debug]',
    `  address = "${join(dir, 'debug.sock')}"`,
    '[metrics]',
    '  address = ""',
  ].join('\n');
  const configPath = join(dir, 'config.toml');
  await writeFile(configPath, config);
  const child = spawn('containerd', ['--config', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-8000);
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  t.after(stop);
  const ctr = async (...args: string[]): Promise<string> => {
    try {
      const { stdout } = await run('ctr-remote', ['-a', address, '-n', 'imgstream-test', ...args], { timeout: 120_000, maxBuffer: 64 << 20 });
      return stdout;
    } catch (err) {
      throw new Error(`ctr-remote ${args.join(' ')} failed: ${String((err as { stderr?: string }).stderr ?? err)}`);
    }
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`containerd exited ${child.exitCode}: ${stderr}`);
    try {
      await run('ctr-remote', ['-a', address, 'version'], { timeout: 5000 });
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`containerd not ready after 20 s: ${stderr}`);
      await sleep(100);
    }
  }
  return { address, dir, ctr, stop };
}
