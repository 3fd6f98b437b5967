// Builds a small two-platform demo image with imgstream's own registry client, pushes it to the
// registry given as the first argument (plain HTTP, loopback), and reads a byte range back.
//   node --conditions=imgstream-source --import tsx scripts/demo-image.ts 127.0.0.1:5000/demo/hello:v1
import { MediaType, RegistryClient, parseReference, type ImageIndex } from '@imgstream/core';
import { pushTinyImage } from '../test/helpers/registry-image.ts';

const refText = process.argv[2];
if (refText === undefined) {
  console.error('usage: demo-image.ts HOST:PORT/REPO:TAG');
  process.exit(2);
}
const ref = parseReference(refText);
const client = new RegistryClient({ insecureRegistries: [ref.registry] });
try {
  const images = [];
  for (const platform of [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
  ]) {
    const tag = `${ref.tag ?? 'latest'}-${platform.architecture}`;
    const img = await pushTinyImage(client, `${ref.registry}/${ref.repository}:${tag}`, {
      platform,
      layers: [
        [
          { path: 'etc/os-release', content: 'NAME=imgstream-demo\n' },
          { path: 'hello.txt', content: `hello from imgstream on ${platform.architecture}\n` },
        ],
        [{ path: 'data/blob.bin', content: Buffer.alloc(256 * 1024, platform.architecture) }],
      ],
    });
    images.push({ platform, img });
    console.log(`pushed ${ref.registry}/${ref.repository}:${tag} ${img.digest}`);
  }
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests: images.map(({ platform, img }) => ({ mediaType: MediaType.OCI_MANIFEST, digest: img.digest, size: img.manifestBytes.length, platform })),
  };
  const pushed = await client.pushManifest(ref, index);
  console.log(`pushed index ${refText} ${pushed.digest}`);
  const first = images[0]!.img.manifest.layers[0]!;
  const bytes = await client.blobReader(ref, first).readRange(0, 16);
  console.log(`range read of ${first.digest} bytes 0-15: ${Buffer.from(bytes).toString('hex')} (gzip magic 1f8b)`);
} finally {
  await client.close();
}
