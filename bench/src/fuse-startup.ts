// Start-up with the working set already in memory: the floor of a prefetched start on FUSE.
//   node --conditions=imgstream-source --import tsx bench/src/fuse-startup.ts [--image python-scipy] [--runs 3]
// For a bench image (built and cached by the time-to-ready benchmark, bench/setup.sh), pushes it
// to a loopback docker-registry, indexes it, opens its layers through an ImageStreamer, loads every
// block of every layer into the content cache, then runs the image's entrypoint chrooted in a
// kernel overlay and reports, per run (page cache dropped before each, no network at all):
//   local  - overlay of the image's unpacked rootfs on local disk (the baseline);
//   FUSE   - overlay of the FUSE layer directories, content from memory: every read and lookup is
//            a FUSE request through the server's event loop;
//   warmed - the same after a PageCacheWarmer read the file ranges the FUSE run read (what
//            imgstreamd's --prefetch_page_cache does during a replay): reads are page-cache hits.
// FUSE requests per kind are counted in the server (fuse-native's dispatchers).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImageStreamer, RegistryClient, type Digest, type FilePiece, type StreamedLayer } from '@imgstream/core';
import { ImgstreamFs, fetcherLayerContent } from '@imgstream/fuse';
import { IMAGES } from './images/recipes.js';
import { buildImage } from './images/build-image.js';
import { run, tsEntry } from './util/proc.js';

const argv = process.argv.slice(2);
const flag = (name: string, def: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1]! : def;
};
const recipe = IMAGES.find((i) => i.name === flag('image', 'python-scipy'));
if (recipe === undefined) throw new Error(`unknown image; one of ${IMAGES.map((i) => i.name).join(', ')}`);
const runs = Number(flag('runs', '3'));

// FUSE requests by kind, counted where fuse-native dispatches them to the filesystem
const FuseNative = createRequire(import.meta.url)('fuse-native') as { prototype: Record<string, unknown> };
const requests = new Map<string, number>();
for (const name of Object.getOwnPropertyNames(FuseNative.prototype)) {
  if (!name.startsWith('_op_')) continue;
  const dispatch = FuseNative.prototype[name] as (...a: unknown[]) => unknown;
  FuseNative.prototype[name] = function (this: unknown, ...a: unknown[]) {
    requests.set(name.slice(4), (requests.get(name.slice(4)) ?? 0) + 1);
    return dispatch.apply(this, a);
  };
}
const takeRequests = (): string => {
  const s = [...requests].map(([k, v]) => `${k} ${v}`).join(', ');
  requests.clear();
  return s;
};

async function dropCaches(): Promise<void> {
  await run(['sync']);
  await writeFile('/proc/sys/vm/drop_caches', '3');
}

/** Runs the entrypoint chrooted in an overlay of `lower` (top first); wall ms and its output. */
async function entrypoint(work: string, lower: string[], cmd: readonly string[]): Promise<{ ms: number; output: string }> {
  const dir = await mkdtemp(join(work, 'ovl-'));
  for (const d of ['upper', 'work', 'merged']) await mkdir(join(dir, d));
  const merged = join(dir, 'merged');
  await run(['mount', '-t', 'overlay', 'overlay', '-o', `lowerdir=${lower.join(':')},upperdir=${join(dir, 'upper')},workdir=${join(dir, 'work')}`, merged]);
  try {
    const started = performance.now();
    // the child, not this process, touches the mount this process serves
    const output = await new Promise<string>((resolve, reject) => {
      const child = spawn('chroot', [merged, ...cmd], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`entrypoint exited ${code}: ${out}`))));
    });
    return { ms: performance.now() - started, output };
  } finally {
    await run(['umount', merged]).catch(() => run(['umount', '-l', merged]));
  }
}

const image = await buildImage(recipe, process.env.IMGSTREAM_BENCH_CACHE ?? '/var/cache/imgstream-bench', (line) => process.stderr.write(`${line}\n`));
const work = await mkdtemp(join(tmpdir(), 'imgstream-fuse-startup-'));
const port = 20_000 + Math.floor(Math.random() * 20_000);
await writeFile(
  join(work, 'registry.yml'),
  ['version: 0.1', 'log:', '  level: error', '  accesslog:', '    disabled: true', 'storage:', '  filesystem:', `    rootdirectory: ${join(work, 'storage')}`, 'http:', `  addr: 127.0.0.1:${port}`].join('\n'),
);
const registryProc = spawn('/usr/bin/docker-registry', ['serve', join(work, 'registry.yml')], { stdio: 'ignore' });
let fs: ImgstreamFs | undefined;
let streamer: ImageStreamer | undefined;
try {
  for (let i = 0; i < 100 && !(await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.ok, () => false)); i++) await sleep(100);
  const ref = `127.0.0.1:${port}/${image.name}:${image.tag}`;
  await run(['skopeo', 'copy', '--quiet', '--dest-tls-verify=false', `oci:${image.ociDir}:${image.tag}`, `docker://${ref}`], { timeoutMs: 600_000 });
  await run([...tsEntry('packages/cli/src/main.ts'), 'index', '--plain-http', ref], { timeoutMs: 1_800_000 });

  const registry = new RegistryClient({ plainHttpLoopback: true });
  streamer = new ImageStreamer({ registry, layerCacheDir: join(work, 'layers'), imagesInUsePath: join(work, 'images.json'), backgroundDownloads: false, maxContentCacheBytes: 4 * 1024 ** 3 });
  await streamer.ready();
  fs = new ImgstreamFs({ mountPoint: join(work, 'mnt') });
  await fs.mount();
  const { manifestDigest, layers: digests } = await streamer.imageLayers(ref);
  const layers: StreamedLayer[] = [];
  for (const layerDigest of digests) layers.push(await streamer.openLayer({ imageRef: ref, manifestDigest, layerDigest }));
  for (const l of layers) fs.addLayer(l.digest, fetcherLayerContent(streamer.fetcher, l));
  await Promise.all(layers.map((l) => streamer!.fetcher.loadBlocks(l, l.index.blocks.map((_b, i) => i))));
  const lower = layers.map((l) => fs!.layerPath(l.digest)).reverse(); // overlay lists the top layer first
  const read = new Map<Digest, FilePiece[]>();
  streamer.fetcher.on('read', (e) => {
    if (e.path !== undefined) read.set(e.layerDigest, [...(read.get(e.layerDigest) ?? []), { path: e.path, offset: e.offset, length: e.bytes }]);
  });

  process.stdout.write(`${image.name}: ${layers.reduce((n, l) => n + l.index.blocks.length, 0)} blocks in memory; ${runs} runs\n`);
  for (let r = 1; r <= runs; r++) {
    await dropCaches();
    const local = await entrypoint(work, [image.rootfsDir], recipe.cmd);
    await dropCaches();
    read.clear();
    takeRequests();
    const fuse = await entrypoint(work, lower, recipe.cmd);
    const fuseRequests = takeRequests();
    await dropCaches();
    const warmer = fs.warmPageCache();
    for (const [digest, pieces] of read) warmer.add(digest, pieces);
    const warm = await warmer.end();
    takeRequests();
    const warmed = await entrypoint(work, lower, recipe.cmd);
    const warmedRequests = takeRequests();
    process.stdout.write(
      `run ${r}: local ${Math.round(local.ms)} ms (${local.output}); ` +
        `FUSE ${Math.round(fuse.ms)} ms (${fuse.output}, ${(fuse.ms / local.ms).toFixed(2)}x; requests: ${fuseRequests}); ` +
        `warmed ${Math.round(warmed.ms)} ms (${warmed.output}, ${(warmed.ms / local.ms).toFixed(2)}x; warm-up ${warm.files} files ${(warm.bytes / 1e6).toFixed(1)} MB in ${Math.round(warm.durationMs)} ms; requests: ${warmedRequests})\n`,
    );
  }
} finally {
  await fs?.close().catch(() => undefined);
  await streamer?.close().catch(() => undefined);
  registryProc.kill();
  await rm(work, { recursive: true, force: true }).catch(() => undefined);
}
