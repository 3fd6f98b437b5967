// Builds the streaming demo image (gzip layers: busybox, then two layers of incompressible data
// files, then a tiny app layer) and pushes it to a loopback registry with plain HTTP.
//   node --conditions=imgstream-source --import tsx scripts/demo-stream-image.ts 127.0.0.1:5000/demo/app:v1 [DATA_MB]
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseReference } from '@imgstream/core';
import { pushTreeImage } from '../test/helpers/image-builder.ts';

const refText = process.argv[2];
const dataMb = Number(process.argv[3] ?? 192);
if (refText === undefined || !Number.isSafeInteger(dataMb) || dataMb < 2) {
  console.error('usage: demo-stream-image.ts HOST:PORT/REPO:TAG [DATA_MB]');
  process.exit(2);
}
const ref = parseReference(refText);
const scratch = await mkdtemp(join(tmpdir(), 'imgstream-demo-data-'));
try {
  const half = Math.floor(dataMb / 2);
  const files: string[] = [];
  for (let i = 0; i < 2; i++) {
    const f = join(scratch, `data-${i}.bin`);
    const parts: Buffer[] = [];
    for (let m = 0; m < half; m++) parts.push(randomBytes(1024 * 1024));
    await writeFile(f, Buffer.concat(parts));
    files.push(f);
  }
  const image = await pushTreeImage(`http://${ref.registry}`, `${ref.repository}:${ref.tag ?? 'latest'}`, [
    { 'bin/busybox': { copyFrom: '/usr/bin/busybox' }, 'etc/hostname': 'imgstream-demo\n', tmp: { dir: true } },
    { 'data/model-a.bin': { copyFrom: files[0]!, mode: 0o644 } },
    { 'data/model-b.bin': { copyFrom: files[1]!, mode: 0o644 } },
    { 'app/hello.txt': 'hello from a streamed image\n' },
  ]);
  console.log(`pushed ${image.ref} (${image.layerDigests.length} gzip layers, ${2 * half} MiB of data files) manifest ${image.manifestDigest}`);
} finally {
  await rm(scratch, { recursive: true, force: true });
}
