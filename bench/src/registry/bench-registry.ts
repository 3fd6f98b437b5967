import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import type { Cleanup } from '../util/cleanup.ts';
import { inNetns, run, stopChild, tsEntry } from '../util/proc.ts';
import type { EmulatedNetwork, ProxiedPort } from '../net/emulated-network.ts';
import type { BuiltImage } from '../images/build-image.ts';

/** The registry's port inside the registry namespace (all its addresses there). */
export const REGISTRY_PORT = 5000;

/** The blob storage's port inside the registry namespace (all its addresses there). */
export const STORAGE_PORT = 5001;

/**
 * A real docker-registry (distribution 2.8) in the registry namespace, listening on that
 * namespace's addresses only (its loopback and the link address), with its storage in `dir`.
 *
 * Blob downloads are answered with a 307 to an nginx in the same namespace that serves the
 * registry's blob files (sendfile, ranges), the way Docker Hub, GHCR, ECR and GCR hand blob
 * downloads to a CDN or object storage; distribution's own `redirect` storage middleware sends
 * them there. Both sit behind the same emulated link. Serving ranges itself, distribution reads
 * 4 MiB per request whatever its size, ~7 ms of CPU on this machine, and that CPU would be taken
 * from the node under test; a registry's storage is not on the node.
 *
 * `storage` is the node side's address of STORAGE_PORT (a delay-proxy port, see
 * EmulatedNetwork.startProxy): the redirects name it, and nginx listens on the same port of the
 * registry namespace's loopback too, so pushes and indexing done inside that namespace follow
 * the same redirects.
 */
export async function startBenchRegistry(cleanup: Cleanup, net: EmulatedNetwork, dir: string, storage: ProxiedPort): Promise<void> {
  const storageRoot = join(dir, 'storage');
  await mkdir(join(storageRoot, 'docker', 'registry', 'v2', 'blobs'), { recursive: true });
  await mkdir(join(dir, 'nginx'), { recursive: true });
  const nginxConfig = [
    'daemon off;',
    'user root;', // the state directory is root's alone
    'worker_processes 1;',
    `pid ${join(dir, 'nginx', 'nginx.pid')};`,
    'error_log stderr error;',
    'events { worker_connections 1024; }',
    'http {',
    '  access_log off;',
    '  sendfile on;',
    '  tcp_nopush on;',
    '  keepalive_requests 1000000;',
    '  keepalive_timeout 300s;',
    `  client_body_temp_path ${join(dir, 'nginx', 'body')};`,
    '  default_type application/octet-stream;',
    '  server {',
    `    listen ${STORAGE_PORT};`,
    `    listen 127.0.0.1:${storage.port};`,
    `    root ${storageRoot};`,
    '    location /docker/registry/v2/blobs/ { }',
    '    location / { return 404; }',
    '  }',
    '}',
    '',
  ].join('\n');
  await writeFile(join(dir, 'nginx.conf'), nginxConfig);
  await startServer(cleanup, net, ['/usr/sbin/nginx', '-p', join(dir, 'nginx'), '-c', join(dir, 'nginx.conf')], storage.port, 'nginx');
  // blob GETs (and HEADs) are answered with a 307 to `storage`
  const redirect = ['middleware:', '  storage:', '    - name: redirect', '      options:', `        baseurl: http://${storage.hostPort}/`];
  const config = ['version: 0.1', 'log:', '  level: error', '  accesslog:', '    disabled: true', 'storage:', '  filesystem:', `    rootdirectory: ${storageRoot}`, ...redirect, 'http:', `  addr: 0.0.0.0:${REGISTRY_PORT}`, ''].join('\n');
  await writeFile(join(dir, 'config.yml'), config);
  await startServer(cleanup, net, ['/usr/bin/docker-registry', 'serve', join(dir, 'config.yml')], REGISTRY_PORT, 'docker-registry');
}

/** Starts a server in the registry namespace and waits until `port` on its loopback accepts connections. */
async function startServer(cleanup: Cleanup, net: EmulatedNetwork, argv: string[], port: number, name: string): Promise<void> {
  const [cmd, ...args] = [...inNetns(net.registryNs), ...argv];
  const child = spawn(cmd!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  cleanup.after(() => stopChild(child));
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${stderr}`);
    const ok = await run([...inNetns(net.registryNs), 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`], { timeoutMs: 5000 })
      .then(() => true)
      .catch(() => false);
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`${name} not listening after 15 s: ${stderr}`);
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
