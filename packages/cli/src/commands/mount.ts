import { execFile } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { promisify } from 'node:util';
import { Command, Option } from 'commander';
import {
  BlockFetcher,
  LayerCache,
  LayerDownloader,
  defaults,
  hostPlatform,
  isDigest,
  openImageLayers,
  parsePlatform,
  parseReference,
  type Digest,
  type OpenedLayer,
  type RegistryClient,
} from '@imgstream/core';
import { ImgstreamFs, fetcherLayerContent } from '@imgstream/fuse';
import { CliError, client, withRegistryFlags, type RegistryFlags } from './image-files.js';

// `imgstream mount REF DIR`: the image's merged root filesystem, read-only, at DIR, streamed.
// One private FUSE mount (ImgstreamFs: layers/ and images/) under a runtime dir, and a kernel
// overlayfs at DIR whose lower dirs are the image's layer entries (top layer first). Runs in the
// foreground until SIGINT/SIGTERM, then unmounts both and removes the runtime dir.

const run = promisify(execFile);

interface MountFlags extends RegistryFlags {
  cacheDir: string;
  runtimeDir: string;
  fallback: 'none' | 'download';
  maxContentCacheBytes: number;
}

/** Stops everything started so far, last first; every step runs even when an earlier one failed. */
class Teardown {
  readonly #steps: Array<() => unknown> = [];
  add(step: () => unknown): void {
    this.#steps.push(step);
  }
  async run(): Promise<void> {
    let first: unknown;
    for (const step of this.#steps.reverse()) {
      try {
        await step();
      } catch (err) {
        first ??= err;
      }
    }
    this.#steps.length = 0;
    if (first !== undefined) throw first;
  }
}

/** `stopped` resolves on the first SIGINT/SIGTERM, which also aborts `controller` (setup stops); `dispose` removes the handlers. */
function onStopSignal(controller: AbortController): { stopped: Promise<NodeJS.Signals>; dispose: () => void } {
  let on: (sig: NodeJS.Signals) => void = () => undefined;
  const dispose = (): void => {
    process.off('SIGINT', on);
    process.off('SIGTERM', on);
  };
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    on = (sig) => {
      dispose();
      controller.abort(new CliError(`interrupted by ${sig} while mounting`));
      resolve(sig);
    };
  });
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  return { stopped, dispose };
}

async function unmount(dir: string): Promise<void> {
  try {
    await run('umount', [dir], { timeout: 30_000 });
  } catch {
    // busy (a shell still has its cwd there): detach it, the kernel frees it when the last user leaves
    await run('umount', ['-l', dir], { timeout: 30_000 });
  }
}

/** Parent directories (relative, `''` for the root) of the whiteouts in an unpacked layer directory: 0/0 character devices. */
async function whiteoutParents(root: string, rel = '', out = new Set<string>()): Promise<Set<string>> {
  for (const d of await readdir(join(root, rel), { withFileTypes: true })) {
    const p = rel === '' ? d.name : `${rel}/${d.name}`;
    if (d.isDirectory()) await whiteoutParents(root, p, out);
    else if (d.isCharacterDevice() && (await lstat(join(root, p))).rdev === 0) out.add(rel);
  }
  return out;
}

/**
 * The bottom lower dir: an empty directory tree holding every directory that contains a whiteout
 * in some layer. overlayfs hides whiteouts only when it lists a *merged* directory (one that
 * exists in two or more lower dirs); in a directory only one layer has, a whiteout that hides
 * nothing (e.g. in the bottom layer) would be listed as a 0/0 device. With an empty copy of each
 * such directory at the bottom those directories are merged, so they list like an extraction.
 * The scaffold adds no entries and, being the lowest layer, no metadata. It also gives overlayfs
 * its second lower dir for one-layer images (it refuses a single lower dir without an upper dir).
 */
async function buildScaffold(scaffold: string, opened: OpenedLayer[], local: ReadonlyMap<Digest, string>): Promise<void> {
  const dirs = new Set<string>();
  for (const l of opened) {
    const dir = local.get(l.descriptor.digest);
    if (dir !== undefined) for (const p of await whiteoutParents(dir)) dirs.add(p);
    else for (const e of l.index?.entries.values() ?? []) if (e.type === 'whiteout') dirs.add(e.path.includes('/') ? e.path.slice(0, e.path.lastIndexOf('/')) : '');
  }
  await mkdir(scaffold);
  for (const d of dirs) if (d !== '') await mkdir(join(scaffold, d), { recursive: true });
}

const shortDigest = (d: Digest): string => d.slice(7, 19);

/** Opens the layers; without an index a layer is refused, or (with `--fallback download`) downloaded and unpacked. */
function checkStreamable(refText: string, opened: OpenedLayer[], fallback: MountFlags['fallback']): void {
  const missing = opened.filter((l) => l.index === undefined);
  if (missing.length === 0 || fallback === 'download') return;
  throw new CliError(
    `${refText}: ${missing.length} of ${opened.length} layers have no seekable index (${missing.map((l) => `${shortDigest(l.descriptor.digest)}: ${l.error?.code ?? '?'}`).join(', ')}); ` +
      `run \`imgstream index ${refText}\` first, or mount with \`--fallback download\` to download and unpack those layers`,
  );
}

async function mountImage(refText: string, dirArg: string, flags: MountFlags, c: RegistryClient, teardown: Teardown, signal: AbortSignal): Promise<void> {
  const ref = parseReference(refText);
  const image = await c.resolveImage(ref, { platform: flags.platform !== undefined ? parsePlatform(flags.platform) : hostPlatform(), signal });
  const opened = await openImageLayers(c, ref, image, { signal });
  checkStreamable(refText, opened, flags.fallback);
  const target = resolvePath(dirArg);
  await mkdir(target, { recursive: true });

  const layerCache = new LayerCache({ layerCacheDir: flags.cacheDir });
  await layerCache.ready();
  const fetcher = new BlockFetcher({ maxContentCacheBytes: flags.maxContentCacheBytes, layerCache });
  teardown.add(() => fetcher.close());

  // layers without an index: downloaded, verified (digest and diffID) and unpacked into the cache dir
  const diffIds = (image.config as { rootfs?: { diff_ids?: unknown[] } }).rootfs?.diff_ids ?? [];
  const local = new Map<Digest, string>();
  const toDownload = opened.map((l, i) => ({ l, i })).filter(({ l }) => l.index === undefined);
  if (toDownload.length > 0) {
    const downloader = new LayerDownloader({ layerCache });
    teardown.add(() => downloader.close());
    await Promise.all(
      toDownload.map(async ({ l, i }) => {
        const diffId = diffIds[i];
        process.stderr.write(`layer ${i} ${shortDigest(l.descriptor.digest)}: no index (${l.error?.code ?? '?'}), downloading ${l.descriptor.size} bytes\n`);
        const dir = await downloader.download(
          { digest: l.descriptor.digest, size: l.descriptor.size, source: l.reader, ...(typeof diffId === 'string' && isDigest(diffId) ? { diffId } : {}) },
          { signal },
        );
        local.set(l.descriptor.digest, dir);
      }),
    );
  }

  const runtime = await mkdtemp(join(flags.runtimeDir, 'mount-'));
  teardown.add(() => rm(runtime, { recursive: true, force: true }));
  const scaffold = join(runtime, 'scaffold');
  await buildScaffold(scaffold, opened, local);
  const fs = new ImgstreamFs({ mountPoint: join(runtime, 'fuse'), fsName: 'imgstream' });
  await fs.mount({ signal });
  teardown.add(() => fs.close());
  for (const l of opened) {
    if (l.index !== undefined) fs.addLayer(l.descriptor.digest, fetcherLayerContent(fetcher, { index: l.index, reader: l.reader }));
    const dir = local.get(l.descriptor.digest);
    if (dir !== undefined) fs.setLayerLocalDir(l.descriptor.digest, dir);
  }
  const imageDir = fs.addImage(refText, image.digest, opened.map((l) => l.descriptor.digest));
  // lower dirs by their short names in the image directory (top first), so the option stays short
  const lowerdir = [...opened.keys()].reverse().map(String).concat(scaffold).join(':');
  signal.throwIfAborted();
  // Not `cwd: imageDir`: the forked child would chdir into our own FUSE mount before exec, while
  // libuv's spawn blocks this process (the server) until that exec: a deadlock. A shell does the cd.
  await run('sh', ['-c', 'cd "$1" && exec mount -t overlay imgstream -o "$2" "$3"', 'sh', imageDir, `ro,lowerdir=${lowerdir}`, target], { timeout: 60_000 });
  teardown.add(() => unmount(target));
  const streamed = opened.length - local.size;
  process.stdout.write(`mounted ${refText} (${image.digest}) read-only at ${target}: ${opened.length} layers, ${streamed} streamed, ${local.size} downloaded; Ctrl-C or SIGTERM unmounts\n`);
}

export function mountCommand(): Command {
  return withRegistryFlags(new Command('mount'))
    .description('mount an image read-only at DIR (FUSE layers + kernel overlayfs), streaming file contents on demand; runs until SIGINT/SIGTERM, then unmounts')
    .argument('<ref>', 'image reference')
    .argument('<dir>', 'mount point (created if missing)')
    .option('--cache-dir <dir>', 'local layer cache (layers downloaded with --fallback download)', join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'imgstream', 'layers'))
    .option('--runtime-dir <dir>', 'where the private FUSE mount is made', '/run/imgstream')
    .addOption(new Option('--fallback <mode>', 'layers without a seekable index: refuse (none) or download and unpack them (download)').choices(['none', 'download']).default('none'))
    .option('--max-content-cache-bytes <n>', 'memory bound of the block cache', (v) => Number.parseInt(v, 10), defaults.engine.maxContentCacheBytes)
    .action(async (refText: string, dir: string, flags: MountFlags) => {
      const c = client(parseReference(refText).registry, flags);
      const teardown = new Teardown();
      teardown.add(() => c.close());
      const controller = new AbortController();
      const { stopped, dispose } = onStopSignal(controller);
      try {
        await mkdir(flags.runtimeDir, { recursive: true });
        await mountImage(refText, dir, flags, c, teardown, controller.signal);
        const sig = await stopped;
        process.stderr.write(`${sig}: unmounting ${resolvePath(dir)}\n`);
      } finally {
        dispose();
        await teardown.run();
      }
    });
}
