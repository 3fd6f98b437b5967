import { buildTar, gzip } from './tar-builder.ts';
import { MediaType, parseReference, sha256Digest, type Descriptor, type ImageManifest, type Platform, type RegistryClient } from '@imgstream/core';

/** A file of a tiny tar layer. */
export interface TinyFile {
  path: string;
  content: Uint8Array | string;
  mode?: number;
}

export interface TinyImageOptions {
  /** Layers as file lists; each becomes a gzip'd tar layer. Default: one layer with one file. */
  layers?: TinyFile[][];
  /** Raw layer blobs pushed as they are (media type OCI tar), after `layers`. */
  rawLayers?: Uint8Array[];
  platform?: Platform;
  /** Manifest media type: OCI (default) or Docker schema 2. */
  format?: 'oci' | 'docker';
}

export interface PushedImage {
  ref: string;
  digest: `sha256:${string}`;
  manifest: ImageManifest;
  manifestBytes: Buffer;
  layers: { descriptor: Descriptor; bytes: Buffer }[];
  config: { descriptor: Descriptor; bytes: Buffer };
}

/** Builds a small image (config + gzip'd tar layers) and pushes it with imgstream's own push API. */
export async function pushTinyImage(client: RegistryClient, ref: string, options: TinyImageOptions = {}): Promise<PushedImage> {
  const r = parseReference(ref);
  const docker = options.format === 'docker';
  const platform = options.platform ?? { os: 'linux', architecture: 'amd64' };
  const fileLayers = options.layers ?? [[{ path: 'hello.txt', content: 'hello from imgstream\n' }]];
  const layers: { descriptor: Descriptor; bytes: Buffer }[] = [];
  const diffIds: string[] = [];
  for (const files of fileLayers) {
    const tar = buildTar(files.map((f) => ({ type: 'file', name: f.path, content: f.content, mode: f.mode ?? 0o644, mtime: 0 })));
    const gz = Buffer.from(gzip(tar));
    diffIds.push(sha256Digest(tar));
    const d = await client.pushBlob(r, gz, { mediaType: docker ? MediaType.DOCKER_LAYER_GZIP : MediaType.OCI_LAYER_GZIP });
    layers.push({ descriptor: d, bytes: gz });
  }
  for (const raw of options.rawLayers ?? []) {
    diffIds.push(sha256Digest(raw));
    const d = await client.pushBlob(r, raw, { mediaType: MediaType.OCI_LAYER });
    layers.push({ descriptor: d, bytes: Buffer.from(raw) });
  }
  const configBytes = Buffer.from(
    JSON.stringify({
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const config = await client.pushBlob(r, configBytes, { mediaType: docker ? MediaType.DOCKER_CONFIG : MediaType.OCI_CONFIG });
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.DOCKER_MANIFEST : MediaType.OCI_MANIFEST,
    config,
    layers: layers.map((l) => l.descriptor),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const pushed = await client.pushManifest(r, manifestBytes);
  return { ref, digest: pushed.digest, manifest, manifestBytes, layers, config: { descriptor: config, bytes: configBytes } };
}
