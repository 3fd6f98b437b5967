import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, tempDir, type Teardown } from './tmp.ts';
import { startTokenServer, type TokenServer, type TokenServerOptions } from './token-server.ts';

export interface RegistryOptions {
  /** Extra YAML appended under the top level of the config (e.g. an `auth:` section). */
  extraConfig?: string;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT`, the host part of image references. */
  readonly host: string;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  readonly storageDir: string;
  stop(): Promise<void>;
}

/**
 * Starts a real docker-registry (distribution 2.8, Debian's /usr/bin/docker-registry) on a free
 * loopback port with its storage in a temp dir. It is stopped when the test ends.
 */
export async function startRegistry(t: Teardown, options: RegistryOptions = {}): Promise<TestRegistry> {
  const dir = await tempDir(t, 'imgstream-registry-');
  const storageDir = join(dir, 'storage');
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const config = [
      'version: 0.1',
      'log:',
      '  level: error',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storageDir}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      options.extraConfig ?? '',
    ].join('\n');
    const configPath = join(dir, 'config.yml');
    await writeFile(configPath, config);
    const child = spawn('/usr/bin/docker-registry', ['serve', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitReady(url, child, () => stderr);
    } catch (err) {
      lastError = err;
      await stopChild(child);
      continue;
    }
    const stop = () => stopChild(child);
    t.after(stop);
    return { host: `127.0.0.1:${port}`, url, port, storageDir, stop };
  }
  throw new Error(`docker-registry did not start: ${String(lastError)}`);
}

async function waitReady(url: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited ${child.exitCode}: ${stderr()}`);
    try {
      const res = await fetch(`${url}/v2/`);
      await res.arrayBuffer();
      if (res.status === 200 || res.status === 401) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`docker-registry not ready after 15 s: ${stderr()}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * A docker-registry that requires HTTP Basic auth, with users from an htpasswd file (bcrypt,
 * written by `htpasswd -Bbn`).
 */
export async function startBasicAuthRegistry(t: Teardown, users: Record<string, string>): Promise<TestRegistry> {
  const dir = await tempDir(t, 'imgstream-htpasswd-');
  const lines: string[] = [];
  for (const [user, password] of Object.entries(users)) {
    const { stdout } = await promisify(execFile)('htpasswd', ['-Bbn', user, password]);
    lines.push(stdout.trim());
  }
  const htpasswd = join(dir, 'htpasswd');
  await writeFile(htpasswd, lines.join('\n') + '\n');
  return startRegistry(t, { extraConfig: ['auth:', '  htpasswd:', '    realm: imgstream-test', `    path: ${htpasswd}`].join('\n') });
}

/** A docker-registry with token auth and the token server that signs its tokens. */
export async function startTokenAuthRegistry(t: Teardown, options: TokenServerOptions = {}): Promise<{ registry: TestRegistry; tokenServer: TokenServer }> {
  const tokenServer = await startTokenServer(t, options);
  const registry = await startRegistry(t, { extraConfig: tokenServer.registryConfig() });
  return { registry, tokenServer };
}
