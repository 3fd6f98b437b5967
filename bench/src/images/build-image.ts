import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { run, REPO_ROOT } from '../util/proc.ts';
import { aptClosure } from './apt-closure.ts';
import type { ImageRecipe, LayerRecipe } from './recipes.ts';

/** Bump when the build procedure changes the bytes it produces. */
const BUILDER_VERSION = 1;
/** Every file in every layer gets this mtime (2023-11-14). */
export const SOURCE_DATE_EPOCH = 1_700_000_000;

export interface BuiltLayer {
  readonly name: string;
  readonly digest: string;
  readonly diffId: string;
  /** gzip size, bytes (what a full pull transfers). */
  readonly compressedBytes: number;
  readonly uncompressedBytes: number;
  /** Entries in the tar (files, dirs, links). */
  readonly entries: number;
  readonly debs: readonly string[];
}

export interface BuiltImage {
  readonly name: string;
  readonly tag: string;
  readonly description: string;
  readonly key: string;
  /** OCI image layout (push it with `skopeo copy oci:DIR:TAG ...`). */
  readonly ociDir: string;
  /** All layers unpacked on top of each other (for the physical-limit trace). */
  readonly rootfsDir: string;
  readonly manifestDigest: string;
  readonly layers: readonly BuiltLayer[];
  readonly cmd: readonly string[];
  readonly env: readonly string[];
  readonly builtAt: string;
}

export const totalCompressed = (i: BuiltImage): number => i.layers.reduce((s, l) => s + l.compressedBytes, 0);
export const totalUncompressed = (i: BuiltImage): number => i.layers.reduce((s, l) => s + l.uncompressedBytes, 0);

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return `sha256:${h.digest('hex')}`;
}

const sha256Bytes = (b: Uint8Array | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function recipeKey(recipe: ImageRecipe): Promise<string> {
  const extra: string[] = [];
  for (const l of recipe.layers) {
    if ('npmProject' in l) extra.push(await readFile(join(REPO_ROOT, l.npmProject, 'package-lock.json'), 'utf8'));
  }
  return createHash('sha256').update(JSON.stringify({ BUILDER_VERSION, recipe, extra })).digest('hex').slice(0, 16);
}

/** Debian packages: `name -> .deb file name` via `apt-get download --print-uris`, downloading what the cache lacks. */
async function fetchDebs(names: readonly string[], debCache: string): Promise<string[]> {
  if (names.length === 0) return [];
  await mkdir(debCache, { recursive: true });
  // (in an empty dir: apt-get prints nothing for files already in its working directory)
  const empty = await mkdtemp(join(tmpdir(), 'imgstream-bench-apt-'));
  const { stdout } = await run(['apt-get', 'download', '--print-uris', ...names], { cwd: empty }).finally(() => rm(empty, { recursive: true, force: true }));
  const byName = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const m = /^'[^']+' ((\S+?)_\S+\.deb) \d+ /.exec(line);
    if (m !== null) byName.set(m[2]!, m[1]!);
  }
  const files = names.map((n) => byName.get(n.replace(/=.*$/, '')));
  if (files.some((f) => f === undefined)) throw new Error(`apt-get download --print-uris named no file for some of ${names.join(' ')}:\n${stdout}`);
  const missing = names.filter((_, i) => !existsSync(join(debCache, files[i]!)));
  if (missing.length > 0) await run(['apt-get', 'download', ...missing], { cwd: debCache, timeoutMs: 900_000 });
  return files as string[];
}

/**
 * Builds `recipe` into an OCI layout under `cacheRoot/images/NAME-KEY` (or returns the cached
 * build). Needs root (chroot for .pyc compilation, bind mounts), apt lists, npm.
 */
export async function buildImage(recipe: ImageRecipe, cacheRoot: string, log: (s: string) => void): Promise<BuiltImage> {
  const key = await recipeKey(recipe);
  const dir = join(cacheRoot, 'images', `${recipe.name}-${key}`);
  const metaPath = join(dir, 'meta.json');
  if (existsSync(metaPath)) return JSON.parse(await readFile(metaPath, 'utf8')) as BuiltImage;

  log(`building image ${recipe.name} (recipe ${key}) in ${dir}`);
  const work = `${dir}.tmp-${process.pid}`;
  await rm(work, { recursive: true, force: true });
  const rootfs = join(work, 'rootfs');
  const blobs = join(work, 'oci', 'blobs', 'sha256');
  await mkdir(rootfs, { recursive: true });
  await mkdir(blobs, { recursive: true });
  const placed = new Set<string>();
  const layers: BuiltLayer[] = [];
  try {
    for (const [i, layer] of recipe.layers.entries()) {
      const ldir = join(work, 'layers', `${String(i).padStart(2, '0')}-${layer.name}`);
      await mkdir(ldir, { recursive: true });
      const debs = await fillLayer(layer, ldir, i === 0, placed, join(cacheRoot, 'debs'));
      await run(['cp', '-a', `${ldir}/.`, `${rootfs}/`]);
      if (recipe.compilePython && existsSync(join(rootfs, 'usr/bin/python3')) && ('debs' in layer || 'files' in layer)) {
        await compilePython(rootfs, ldir);
        await run(['cp', '-a', `${ldir}/.`, `${rootfs}/`]);
      }
      const built = await packLayer(ldir, blobs, layer.name, debs);
      if (built === null) {
        log(`  layer ${layer.name}: empty (everything already in earlier layers), skipped`);
        continue;
      }
      log(`  layer ${built.name}: ${built.entries} entries, ${(built.uncompressedBytes / 1e6).toFixed(1)} MB -> ${(built.compressedBytes / 1e6).toFixed(1)} MB gzip`);
      layers.push(built);
      await rm(ldir, { recursive: true, force: true });
    }
    const arch = process.arch === 'x64' ? 'amd64' : process.arch;
    const config = Buffer.from(
      JSON.stringify({
        created: new Date(SOURCE_DATE_EPOCH * 1000).toISOString(),
        architecture: arch,
        os: 'linux',
        config: { Cmd: recipe.cmd, Env: recipe.env, WorkingDir: '/' },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      }),
    );
    const configDigest = sha256Bytes(config);
    await writeFile(join(blobs, configDigest.slice(7)), config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
        layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.compressedBytes })),
      }),
    );
    const manifestDigest = sha256Bytes(manifest);
    await writeFile(join(blobs, manifestDigest.slice(7)), manifest);
    await writeFile(join(work, 'oci', 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await writeFile(
      join(work, 'oci', 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': recipe.tag } }],
      }),
    );
    const meta: BuiltImage = {
      name: recipe.name,
      tag: recipe.tag,
      description: recipe.description,
      key,
      ociDir: join(dir, 'oci'),
      rootfsDir: join(dir, 'rootfs'),
      manifestDigest,
      layers,
      cmd: recipe.cmd,
      env: recipe.env,
      builtAt: new Date().toISOString(),
    };
    await writeFile(join(work, 'meta.json'), JSON.stringify(meta, null, 2));
    await rm(join(work, 'layers'), { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
    await rename(work, dir);
    return meta;
  } catch (err) {
    await run(['umount', '-l', join(rootfs, '.imgstream-build')]).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}

async function fillLayer(layer: LayerRecipe, ldir: string, first: boolean, placed: Set<string>, debCache: string): Promise<string[]> {
  let debFiles: string[] = [];
  if ('debs' in layer) {
    const closure = (await aptClosure(layer.debs)).filter((p) => !placed.has(p));
    for (const p of closure) placed.add(p);
    const pinned = closure.map((p) => layer.debs.find((d) => d.startsWith(`${p}=`)) ?? p);
    debFiles = await fetchDebs(pinned, debCache);
    for (const f of debFiles) await run(['dpkg-deb', '-x', join(debCache, f), ldir]);
    // like Debian's slim images: no docs, man pages or lintian overrides
    for (const d of ['usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/lintian']) await rm(join(ldir, d), { recursive: true, force: true });
    for (const [path, target] of Object.entries(layer.symlinks ?? {})) {
      await rm(join(ldir, path), { force: true });
      await symlink(target, join(ldir, path));
    }
  } else if ('npmProject' in layer) {
    const target = join(ldir, layer.into);
    await mkdir(target, { recursive: true });
    for (const f of ['package.json', 'package-lock.json']) await copyFile(join(REPO_ROOT, layer.npmProject, f), join(target, f));
    await run(['npm', 'ci', '--ignore-scripts', '--no-audit', '--no-fund', '--omit=dev'], { cwd: target, timeoutMs: 900_000 });
  } else {
    for (const [path, content] of Object.entries(layer.files)) {
      await mkdir(dirname(join(ldir, path)), { recursive: true });
      if (typeof content === 'string') await writeFile(join(ldir, path), content);
      else await run(['cp', '--preserve=mode', content.copyFrom, join(ldir, path)]);
    }
  }
  if (first) {
    for (const d of ['proc', 'sys', 'dev', 'etc', 'root', 'run', 'tmp']) await mkdir(join(ldir, d), { recursive: true });
    await run(['chmod', '1777', join(ldir, 'tmp')]);
    await writeFile(join(ldir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n');
    await writeFile(join(ldir, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  }
  return debFiles;
}

/** Compiles the layer's Python sources with the image's own interpreter (chroot), as Debian's postinst would. */
async function compilePython(rootfs: string, ldir: string): Promise<void> {
  const mnt = join(rootfs, '.imgstream-build');
  await mkdir(mnt, { recursive: true });
  await run(['mount', '--bind', ldir, mnt]);
  try {
    const targets = ['usr/lib/python3', 'usr/lib/python3.11', 'app'].filter((d) => existsSync(join(ldir, d))).map((d) => `/.imgstream-build/${d}`);
    if (targets.length > 0) {
      // exit 1 = some file did not compile (e.g. a test fixture with bad syntax): fine, as with py3compile
      const argv = ['chroot', rootfs, '/usr/bin/python3', '-m', 'compileall', '-q', '--invalidation-mode', 'unchecked-hash', '-s', '/.imgstream-build', '-p', '/', ...targets];
      await run(['sh', '-c', '"$@" >/dev/null; rc=$?; [ "$rc" -le 1 ]', 'compile', ...argv], { timeoutMs: 900_000 });
    }
  } finally {
    await run(['umount', mnt]);
    await rm(mnt, { recursive: true, force: true });
  }
}

async function packLayer(ldir: string, blobs: string, name: string, debs: readonly string[]): Promise<BuiltLayer | null> {
  const { stdout: listing } = await run(['find', ldir, '-mindepth', '1']);
  const entries = listing.split('\n').filter(Boolean).length;
  if (entries === 0) return null;
  const tarPath = `${ldir}.tar`;
  await run([
    'tar',
    '--sort=name',
    '--owner=0',
    '--group=0',
    '--numeric-owner',
    `--mtime=@${SOURCE_DATE_EPOCH}`,
    '--format=posix',
    '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
    '-C',
    ldir,
    '-cf',
    tarPath,
    '.',
  ], { timeoutMs: 600_000 });
  const diffId = await sha256File(tarPath);
  const uncompressedBytes = (await stat(tarPath)).size;
  const gzPath = `${tarPath}.gz`;
  await run(['sh', '-c', 'gzip -n -6 -c "$1" > "$2"', 'gzip', tarPath, gzPath], { timeoutMs: 900_000 });
  const digest = await sha256File(gzPath);
  const compressedBytes = (await stat(gzPath)).size;
  await rename(gzPath, join(blobs, digest.slice(7)));
  await rm(tarPath);
  return { name, digest, diffId, compressedBytes, uncompressedBytes, entries, debs };
}
