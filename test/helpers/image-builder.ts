// Builds OCI images from entry lists (layers as gzip or uncompressed tars, config with diff_ids,
// manifest), writes them as an OCI image layout, and pushes them with skopeo.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { buildEstargz } from './estargz-builder.ts';
import { buildTar, gzip, treeEntries, type TarEntrySpec, type TreeEntry } from './tar-builder.ts';

const run = promisify(execFile);

export interface LayerSpec {
  entries: readonly TarEntrySpec[];
  /** Default 'gzip'. 'estargz' builds an eStargz blob (with the TOC digest annotation). */
  compression?: 'gzip' | 'none' | 'estargz';
  /** Layer descriptor annotations. */
  annotations?: Record<string, string>;
}

export interface ImageSpec {
  layers: readonly LayerSpec[];
  architecture?: string;
  os?: string;
  /** Extra config fields (e.g. `config: { Cmd: [...] }`). */
  config?: Record<string, unknown>;
}

export interface Blob {
  readonly mediaType: string;
  readonly digest: `sha256:${string}`;
  readonly size: number;
  readonly bytes: Uint8Array;
}

export interface BuiltLayer extends Blob {
  /** The uncompressed tar. */
  readonly tar: Uint8Array;
  readonly diffId: `sha256:${string}`;
  readonly annotations?: Record<string, string>;
}

export interface BuiltImage {
  readonly layers: readonly BuiltLayer[];
  readonly config: Blob;
  readonly manifest: Blob;
}

export const sha256 = (b: Uint8Array): `sha256:${string}` => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));

export const MEDIA = Object.freeze({
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  layerTar: 'application/vnd.oci.image.layer.v1.tar',
});

/** Builds an image in memory. */
export function buildImage(spec: ImageSpec): BuiltImage {
  const layers: BuiltLayer[] = spec.layers.map((l) => {
    if (l.compression === 'estargz') {
      const esgz = buildEstargz(l.entries);
      const annotations = { ...l.annotations, 'containerd.io/snapshot/stargz/toc.digest': esgz.tocDigest };
      return {
        mediaType: MEDIA.layerGzip,
        digest: sha256(esgz.blob),
        size: esgz.blob.byteLength,
        bytes: esgz.blob,
        // the layer's uncompressed content: the entries, then the TOC entry
        tar: new Uint8Array(gunzipSync(esgz.blob)),
        diffId: sha256(new Uint8Array(gunzipSync(esgz.blob))),
        annotations,
      };
    }
    const tar = buildTar(l.entries);
    const gz = (l.compression ?? 'gzip') === 'gzip';
    const bytes = gz ? gzip(tar) : tar;
    return {
      mediaType: gz ? MEDIA.layerGzip : MEDIA.layerTar,
      digest: sha256(bytes),
      size: bytes.byteLength,
      bytes,
      tar,
      diffId: sha256(tar),
      ...(l.annotations !== undefined ? { annotations: l.annotations } : {}),
    };
  });
  const configBytes = json({
    architecture: spec.architecture ?? 'amd64',
    os: spec.os ?? 'linux',
    config: {},
    ...spec.config,
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map(() => ({ created_by: 'imgstream test image builder' })),
  });
  const config: Blob = { mediaType: MEDIA.config, digest: sha256(configBytes), size: configBytes.byteLength, bytes: configBytes };
  const manifestBytes = json({
    schemaVersion: 2,
    mediaType: MEDIA.manifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size, ...(l.annotations !== undefined ? { annotations: l.annotations } : {}) })),
  });
  const manifest: Blob = { mediaType: MEDIA.manifest, digest: sha256(manifestBytes), size: manifestBytes.byteLength, bytes: manifestBytes };
  return { layers, config, manifest };
}

/** Writes the image as an OCI image layout directory (`oci:DIR:TAG` for skopeo). */
export async function writeOciLayout(image: BuiltImage, dir: string, tag = 'latest'): Promise<void> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  for (const b of [...image.layers, image.config, image.manifest]) await writeFile(join(blobs, b.digest.slice(7)), b.bytes);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.index,
      manifests: [{ mediaType: MEDIA.manifest, digest: image.manifest.digest, size: image.manifest.size, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
}

/** Writes the OCI layout as a tar archive (for `ctr images import`). */
export async function writeOciArchive(image: BuiltImage, dir: string, file: string, tag = 'latest'): Promise<void> {
  await writeOciLayout(image, dir, tag);
  await run('tar', ['-C', dir, '-cf', file, 'oci-layout', 'index.json', 'blobs']);
}

/** Pushes an OCI layout directory to a plain-HTTP registry on loopback with skopeo, blobs and digests unchanged (uncompressed layers stay uncompressed). */
export async function pushOciLayout(dir: string, tag: string, registryHost: string, repo: string): Promise<void> {
  await run('skopeo', ['copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', `oci:${dir}:${tag}`, `docker://${registryHost}/${repo}:${tag}`], { timeout: 60_000 });
}

/** What {@link pushImage} pushed. */
export interface PushedBuiltImage {
  /** `HOST/REPO:TAG` */
  readonly ref: string;
  readonly manifestDigest: `sha256:${string}`;
  readonly layerDigests: readonly `sha256:${string}`[];
  readonly diffIds: readonly `sha256:${string}`[];
}

async function putBlob(registryUrl: string, repo: string, blob: Blob): Promise<void> {
  const start = await fetch(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.arrayBuffer();
  if (start.status !== 202) throw new Error(`blob upload start: HTTP ${start.status}`);
  const location = new URL(start.headers.get('location')!, registryUrl);
  location.searchParams.set('digest', blob.digest);
  const put = await fetch(location, { method: 'PUT', body: blob.bytes, headers: { 'content-type': 'application/octet-stream' } });
  await put.arrayBuffer();
  if (put.status !== 201) throw new Error(`blob upload: HTTP ${put.status}`);
}

/** Pushes a built image to a plain-HTTP registry (`http://127.0.0.1:PORT`) as `REPO:TAG`, with plain HTTP requests (no skopeo). */
export async function pushImage(registryUrl: string, name: string, image: BuiltImage): Promise<PushedBuiltImage> {
  const [repo, tag = 'latest'] = name.split(':') as [string, string?];
  for (const b of [...image.layers, image.config]) await putBlob(registryUrl, repo, b);
  const res = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: image.manifest.bytes, headers: { 'content-type': image.manifest.mediaType } });
  await res.arrayBuffer();
  if (res.status !== 201) throw new Error(`manifest upload: HTTP ${res.status}`);
  return {
    ref: `${new URL(registryUrl).host}/${repo}:${tag}`,
    manifestDigest: image.manifest.digest,
    layerDigests: image.layers.map((l) => l.digest),
    diffIds: image.layers.map((l) => l.diffId),
  };
}

/** The host's architecture in OCI terms. */
export const hostArchitecture = process.arch === 'x64' ? 'amd64' : process.arch;

/** Builds an image of tree layers (bottom first) for this host's platform, with `Cmd` (default `/bin/busybox true`) and `PATH=/bin`, and pushes it. */
export async function pushTreeImage(registryUrl: string, name: string, trees: ReadonlyArray<Record<string, TreeEntry>>, options: { cmd?: string[] } = {}): Promise<PushedBuiltImage> {
  const layers = await Promise.all(trees.map(async (tree) => ({ entries: await treeEntries(tree) })));
  const image = buildImage({ layers, architecture: hostArchitecture, config: { config: { Cmd: options.cmd ?? ['/bin/busybox', 'true'], Env: ['PATH=/bin'] } } });
  return pushImage(registryUrl, name, image);
}
