#!/usr/bin/env node
// Runs every *.test.ts under packages/*/test, examples/*/test and test/ with node:test through tsx.
// Node 20's --test takes no globs, so the file list is built here.
//   node scripts/run-tests.mjs            all tests
//   node scripts/run-tests.mjs --unit     only packages/*/test (no root, FUSE or containerd needed)
//   node scripts/run-tests.mjs FILTER...  only files whose path contains one of the FILTERs
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const filters = args.filter((a) => !a.startsWith('--'));

function walk(dir, out) {
  let names;
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.ts')) out.push(relative(root, p));
  }
  return out;
}

const dirs = [];
for (const group of ['packages', 'examples']) {
  for (const name of safeList(join(root, group))) dirs.push(join(root, group, name, 'test'));
}
if (!unitOnly) dirs.push(join(root, 'test'));

function safeList(d) {
  try {
    return readdirSync(d);
  } catch {
    return [];
  }
}

let files = dirs.flatMap((d) => walk(d, [])).sort();
if (filters.length > 0) files = files.filter((f) => filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}

const concurrency = process.env.IMGSTREAM_TEST_CONCURRENCY ?? '2';
const result = spawnSync(
  process.execPath,
  ['--conditions=imgstream-source', '--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files],
  { cwd: root, stdio: 'inherit', env: { ...process.env } },
);
process.exit(result.status ?? 1);
