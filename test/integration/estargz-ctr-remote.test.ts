import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ESTARGZ_TOC_DIGEST_ANNOTATION, FileRangeReader, openLayerIndex } from '@imgstream/core';
import { makeLab, startContainerd } from '../helpers/containerd.ts';
import { allTypesEntries, multiLayerEntries } from '../helpers/fixtures.ts';
import { buildImage, pushOciLayout, writeOciLayout } from '../helpers/image-builder.ts';
import { assertIndexMatchesTruth, extractTruth } from '../helpers/layer-truth.ts';
import { startRegistry } from '../helpers/registry.ts';
import { tempDir } from '../helpers/tmp.ts';

const run = promisify(execFile);

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

test('layers converted by `ctr-remote image convert --estargz --oci` read through our index equal `tar -x` of the plain layers', { timeout: 240_000 }, async (t) => {
  // No sparse files: ctr-remote rejects GNU 'S' entries, and for PAX sparse files its converter
  // re-reads `size` (the logical size) raw bytes from the original tar, which cuts or corrupts them
  // (sparse files are covered against GNU tar in layer-index-truth.test.ts)
  const image = buildImage({
    layers: [
      { entries: allTypesEntries().filter((e) => e.type !== 'sparse') },
      ...multiLayerEntries().map((entries) => ({ entries })),
    ],
  });
  const dir = await tempDir(t, 'imgstream-esgz-');
  await writeOciLayout(image, join(dir, 'layout'), 'v1');
  const registry = await startRegistry(t);
  await pushOciLayout(join(dir, 'layout'), 'v1', registry.host, 'interop/plain');
  const ctrd = await startContainerd(await makeLab(t, 'imgstream-esgz-ctrd-'));
  const ctr = (...args: string[]) => ctrd.ctr(args, { binary: 'ctr-remote', timeoutMs: 120_000 });
  const src = `${registry.host}/interop/plain:v1`;
  await ctr('image', 'pull', '--plain-http', src);
  await ctr('image', 'convert', '--estargz', '--oci', '--estargz-chunk-size', '65536', src, 'test.invalid/interop:esgz');
  await ctr('image', 'export', join(dir, 'esgz.tar'), 'test.invalid/interop:esgz');
  const out = join(dir, 'esgz');
  await mkdir(out);
  await run('tar', ['-xf', join(dir, 'esgz.tar'), '-C', out]);
  const blobPath = (digest: string) => join(out, 'blobs', 'sha256', digest.slice('sha256:'.length));
  const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const manifestDesc = index.manifests[0];
  assert.ok(manifestDesc !== undefined);
  const manifest = JSON.parse(await readFile(blobPath(manifestDesc.digest), 'utf8')) as { layers: Descriptor[] };
  assert.equal(manifest.layers.length, image.layers.length);
  let multiChunk = 0;
  for (const [i, layer] of manifest.layers.entries()) {
    const tocDigest = layer.annotations?.[ESTARGZ_TOC_DIGEST_ANNOTATION];
    assert.ok(tocDigest !== undefined, `layer ${i} has a TOC digest annotation`);
    const reader = await FileRangeReader.open(blobPath(layer.digest));
    t.after(() => reader.close());
    assert.equal(reader.size, layer.size);
    const idx = await openLayerIndex(reader, { layerDigest: layer.digest as `sha256:${string}`, ...(layer.annotations !== undefined ? { annotations: layer.annotations } : {}) });
    assert.equal(idx.format, 'estargz');
    multiChunk += [...idx.entries.values()].filter((e) => (e.extents?.length ?? 0) > 1).length;
    const plain = image.layers[i];
    assert.ok(plain !== undefined);
    const truth = await extractTruth(t, plain.tar);
    await assertIndexMatchesTruth(idx, reader, truth, { mtimeSeconds: true, seed: i + 100, randomReads: 150 });
  }
  assert.ok(multiChunk >= 3, `files split into several chunks: ${multiChunk}`);
});
