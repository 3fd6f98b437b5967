import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { tempDir, type Teardown } from './tmp.ts';

const exec = promisify(execFile);

/**
 * A tiny OCI image for containerd tests, built with GNU tar from directory trees and pushed to a
 * registry with plain HTTP (no skopeo). Each layer is a map of path -> content; `{ copyFrom }`
 * copies a host file (e.g. /usr/bin/busybox), `{ whiteout: true }` writes the overlay-style
 * `.wh.NAME` entry, `{ dir: true }` an empty directory. Paths are relative to the image root.
 */
export type LayerEntry = string | { copyFrom: string; mode?: number } | { whiteout: true } | { opaque: true } | { dir: true };

export interface TinyImage {
  /** `HOST/REPO:TAG` */
  readonly ref: string;
  readonly manifestDigest: string;
  readonly layerDigests: readonly string[];
  readonly diffIds: readonly string[];
}

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A deterministic tar of `entries` (root:root, fixed mtime), via GNU tar. */
async function layerTar(t: Teardown, entries: Record<string, LayerEntry>): Promise<Buffer> {
  const dir = await tempDir(t, 'imgstream-layer-');
  const root = join(dir, 'root');
  await mkdir(root);
  for (const [path, entry] of Object.entries(entries)) {
    const target = join(root, path);
    await mkdir(dirname(target), { recursive: true });
    if (typeof entry === 'string') {
      await writeFile(target, entry);
    } else if ('copyFrom' in entry) {
      await copyFile(entry.copyFrom, target);
      await chmod(target, entry.mode ?? 0o755);
    } else if ('whiteout' in entry) {
      await writeFile(join(dirname(target), `.wh.${basename(target)}`), '');
    } else if ('opaque' in entry) {
      await mkdir(target, { recursive: true });
      await writeFile(join(target, '.wh..wh..opq'), '');
    } else {
      await mkdir(target, { recursive: true });
    }
  }
  const out = join(dir, 'layer.tar');
  await exec('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@1700000000', '--format=posix', '--pax-option=delete=atime,delete=ctime', '-C', root, '-cf', out, '.']);
  return readFile(out);
}

async function putBlob(registryUrl: string, repo: string, data: Uint8Array): Promise<string> {
  const digest = sha256(data);
  const start = await fetch(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.arrayBuffer();
  if (start.status !== 202) throw new Error(`blob upload start: HTTP ${start.status}`);
  const location = new URL(start.headers.get('location')!, registryUrl);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
  await put.arrayBuffer();
  if (put.status !== 201) throw new Error(`blob upload: HTTP ${put.status}`);
  return digest;
}

/** Builds the layers (bottom first), a config and an OCI manifest, and pushes them to `registryUrl`. */
export async function pushTinyImage(
  t: Teardown,
  registryUrl: string,
  name: string,
  layers: ReadonlyArray<Record<string, LayerEntry>>,
  options: { cmd?: string[] } = {},
): Promise<TinyImage> {
  const [repo, tag = 'latest'] = name.split(':') as [string, string?];
  const diffIds: string[] = [];
  const layerDescs: Array<{ mediaType: string; digest: string; size: number }> = [];
  for (const entries of layers) {
    const tar = await layerTar(t, entries);
    diffIds.push(sha256(tar));
    const gz = gzipSync(tar, { level: 6 });
    layerDescs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: await putBlob(registryUrl, repo, gz), size: gz.length });
  }
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  const config = Buffer.from(
    JSON.stringify({
      architecture: arch,
      os: 'linux',
      config: { Cmd: options.cmd ?? ['/bin/busybox', 'true'], Env: ['PATH=/bin'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const configDigest = await putBlob(registryUrl, repo, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: layerDescs,
    }),
  );
  const res = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    body: manifest,
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  await res.arrayBuffer();
  if (res.status !== 201) throw new Error(`manifest upload: HTTP ${res.status}`);
  const host = new URL(registryUrl).host;
  return { ref: `${host}/${repo}:${tag}`, manifestDigest: sha256(manifest), layerDigests: layerDescs.map((l) => l.digest), diffIds };
}
