import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { unpackLayer } from '@imgstream/core';
import { coreTarExtractor } from '../../packages/core/src/download/core-tar-entries.ts';
import { allTypesEntries } from '../helpers/fixtures.ts';
import { extractTruth } from '../helpers/layer-truth.ts';
import { buildTar } from '../helpers/tar-builder.ts';
import { tempDir } from '../helpers/tmp.ts';

const run = promisify(execFile);

test('the layer unpacker fed by core readTar: sparse files expanded, binary xattrs exact, equal to GNU tar', async (t) => {
  const tar = buildTar(allTypesEntries());
  const truth = await extractTruth(t, tar);
  const dir = await tempDir(t, 'imgstream-unpack-');
  const root = join(dir, 'root');
  await mkdir(root);
  await mkdir(join(dir, 'scratch'));
  const { writable, entries } = coreTarExtractor();
  const [, result] = await Promise.all([pipeline(Readable.from([Buffer.from(tar)]), writable), unpackLayer(entries, root, { scratchDir: join(dir, 'scratch') })]);
  assert.ok(result.entries > 25);
  for (const p of ['sparse/gnu', 'sparse/pax1', 'sparse/pax01', 'usr/bin/tool', 'etc/hosts', 'dup', `gnu/${'z'.repeat(150)}`]) {
    const want = await readFile(truth.get(p)?.abs ?? '');
    assert.ok((await readFile(join(root, p))).equals(want), p);
  }
  const { stdout } = await run('getfattr', ['-d', '-m', '-', '-e', 'hex', '--absolute-names', join(root, 'etc/hosts')]);
  assert.match(stdout, new RegExp(`security.capability=0x${truth.get('etc/hosts')?.xattrs.get('security.capability')}`));
  assert.match(stdout, /user.comment=0x6869/);
});
