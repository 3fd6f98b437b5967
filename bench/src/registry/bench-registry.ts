import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import type { Cleanup } from '../util/cleanup.ts';
import { inNetns, run, stopChild, tsEntry } from '../util/proc.ts';
import type { EmulatedNetwork } from '../net/emulated-network.ts';
import type { BuiltImage } from '../images/build-image.ts';

/** The registry's port inside the registry namespace (all its addresses there). */
export const REGISTRY_PORT = 5000;

/**
 * A real docker-registry (distribution 2.8) in the registry namespace, listening on that
 * namespace's addresses only (its loopback and the link address). Storage in `dir`.
 */
export async function startBenchRegistry(cleanup: Cleanup, net: EmulatedNetwork, dir: string): Promise<void> {
  await mkdir(join(dir, 'storage'), { recursive: true });
  const config = ['version: 0.1', 'log:', '  level: error', '  accesslog:', '    disabled: true', 'storage:', '  filesystem:', `    rootdirectory: ${join(dir, 'storage')}`, 'http:', `  addr: 0.0.0.0:${REGISTRY_PORT}`, ''].join('\n');
  await writeFile(join(dir, 'config.yml'), config);
  const [cmd, ...args] = [...inNetns(net.registryNs), '/usr/bin/docker-registry', 'serve', join(dir, 'config.yml')];
  const child = spawn(cmd!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  cleanup.after(() => stopChild(child));
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited ${child.exitCode}: ${stderr}`);
    const ok = await run([...inNetns(net.registryNs), 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${REGISTRY_PORT}`], { timeoutMs: 5000 })
      .then(() => true)
      .catch(() => false);
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`docker-registry not listening after 15 s: ${stderr}`);
}

/** Pushes a built image from its OCI layout, inside the registry namespace (not over the shaped link). */
export async function pushImage(net: EmulatedNetwork, image: BuiltImage): Promise<void> {
  await run([...inNetns(net.registryNs), 'skopeo', 'copy', '--quiet', '--dest-tls-verify=false', `oci:${image.ociDir}:${image.tag}`, `docker://127.0.0.1:${REGISTRY_PORT}/${image.name}:${image.tag}`], { timeoutMs: 600_000 });
}

/**
 * Builds and pushes the image's imgstream index (`imgstream index`), inside the registry namespace
 * so it is not part of any measurement: a registry-side step done once per image, like a CI job.
 */
export async function indexImageForImgstream(net: EmulatedNetwork, image: BuiltImage): Promise<void> {
  await run([...inNetns(net.registryNs), ...tsEntry('packages/cli/src/main.ts'), 'index', '--plain-http', `127.0.0.1:${REGISTRY_PORT}/${image.name}:${image.tag}`], { timeoutMs: 1_800_000 });
}
