import { spawnSync } from 'node:child_process';
import { mkdir, realpath } from 'node:fs/promises';
import { basename, dirname, resolve as resolvePath } from 'node:path';
import { abortable, ErrorCode, defaults, ImgstreamError, channel, invalidOption, parseDigest, publish } from '@imgstream/core';
import type { Digest } from '@imgstream/core';
import type { AddLayerOptions, LayerContent } from './content.js';
import { Errno, errnoOf } from './errno.js';
import { loadFuseNative } from './fuse-native.js';
import type { FuseCallback, FuseConstructor, FuseInstance, FuseOps, FuseSignal } from './fuse-native.js';
import { LayerView, layerNeedsXattrs, parentOf } from './layer-view.js';
import type { LayerNode } from './layer-view.js';
import { findNotifyFd, invalidateEntry, pinDirectory, type PinnedDirectory } from './kernel-notify.js';
import { findMount } from './mount-table.js';
import { PageCacheWarmer, type PageCacheWarmerOptions } from './page-cache-warmer.js';
import { imageDirName, layerDirName, parseLayerDirName } from './names.js';
import { abortConnection, lazyUnmount, recoverStaleMount } from './stale-mount.js';
import { syntheticDirStat, syntheticLinkStat } from './stat.js';
import type { FuseStat } from './stat.js';

/** Options of {@link ImgstreamFs}. */
export interface ImgstreamFsOptions {
  /** Directory the filesystem is mounted on; created when missing. Default `/run/imgstream/mnt`. */
  mountPoint?: string;
  /**
   * How long one read may wait for its content source before it fails with EIO (the reason is
   * published on `imgstream:fuse:read-error`). Milliseconds; default 30000.
   */
  readTimeoutMs?: number;
  /** Largest read the kernel sends in one request (`max_read`). Bytes; default 131072 (libfuse2's limit). */
  maxReadBytes?: number;
  /**
   * Most read-ahead the mount allows the kernel (`max_readahead`). Bytes; default 1 MiB. The
   * kernel reads ahead by the mount's backing device's `read_ahead_kb` (128 KiB when mounted), which
   * this can only lower (docs/fuse.md, "Mount options").
   */
  maxReadaheadBytes?: number;
  /**
   * How long the kernel caches attributes and directory entries (`attr_timeout`, `entry_timeout`).
   * Layers are immutable, so this is long. Milliseconds; default 3600000. Page cache is kept
   * across opens (`kernel_cache`).
   */
  cacheTimeoutMs?: number;
  /**
   * How long the kernel caches a lookup that found nothing (`negative_timeout`), so the next
   * lookup of that name fails without asking this process. Milliseconds; default 0 (none cached).
   *
   * Layers are immutable, so a name missing in one stays missing; module resolution (node,
   * python) looks up hundreds of such names once per process. {@link addLayer} and
   * {@link addImage} drop a cached miss of the name they add (a kernel notification on the mount's
   * connection, done in the background; {@link visible} resolves when it is done). With a timeout,
   * mount() keeps `layers/` and `images/` open for the mount's life and rejects with
   * IMGSTREAM_MOUNT_FAILED when it cannot address them (docs/fuse.md, "Negative entries").
   */
  negativeTimeoutMs?: number;
  /**
   * Called for each lookup of a path under a layer's directory that the layer does not have
   * (answered ENOENT): `path` is the path in the layer. For recording which names a start-up looks
   * up in vain (a prefetch report's `absent`). Must not throw. Default none.
   */
  onAbsent?: (layer: Digest, path: string) => void;
  /**
   * Called with each path under a layer that is looked up and found (its attributes asked for):
   * what a prefetch recording keeps, but the files it reads, as the paths a start-up looked up
   * (a prefetch report's `looked`). Must not throw. Default none.
   */
  onLookup?: (layer: Digest, path: string) => void;
  /** Let users other than the mounting one (containers, overlayfs users) use the mount. Default true. */
  allowOther?: boolean;
  /**
   * How long mount() waits for an existing mount at the mount point to answer before it treats it
   * as stale (left by a crashed process) and aborts it. Milliseconds; default 5000.
   */
  staleCheckTimeoutMs?: number;
  /** Name shown as the mount's source in /proc/mounts. Default `imgstream`. */
  fsName?: string;
  /**
   * Serve extended attributes: the layers' own (`security.capability`, `user.*`, ...) and the
   * `trusted.overlay.opaque` marker of opaque directories. Default true.
   *
   * With false the mount has none: the first getxattr or listxattr is answered ENOSYS and the
   * kernel fails every later one itself (EOPNOTSUPP) without asking. overlayfs asks a lower dir
   * for `trusted.overlay.metacopy` of every file and `trusted.overlay.opaque`/`redirect`/`origin`
   * of every directory it looks up, so a container on such a mount makes no round trip to this
   * process for those (python-scipy's start: ~3 000 of them). {@link addLayer} then refuses a
   * layer that needs xattrs (`layerNeedsXattrs`).
   */
  xattrs?: boolean;
}

interface ResolvedOptions {
  mountPoint: string;
  readTimeoutMs: number;
  maxReadBytes: number;
  maxReadaheadBytes: number;
  cacheTimeoutMs: number;
  negativeTimeoutMs: number;
  onAbsent: ((layer: Digest, path: string) => void) | undefined;
  onLookup: ((layer: Digest, path: string) => void) | undefined;
  allowOther: boolean;
  staleCheckTimeoutMs: number;
  fsName: string;
  xattrs: boolean;
}

interface ImageRecord {
  readonly ref: string;
  readonly manifestDigest: Digest;
  readonly name: string;
  readonly layers: readonly Digest[];
  readonly ino: number;
  readonly addedMs: number;
}

interface OpenFile {
  readonly layer: LayerView;
  readonly node: LayerNode;
}

type Resolved =
  | { kind: 'root' }
  | { kind: 'layers' }
  | { kind: 'images' }
  | { kind: 'layer'; layer: LayerView; path: string; node: LayerNode }
  | { kind: 'image'; image: ImageRecord }
  | { kind: 'image-link'; image: ImageRecord; index: number; target: string };

const ROOT_INO = 1;
const LAYERS_INO = 2;
const IMAGES_INO = 3;
const FIRST_DYNAMIC_INO = 16;
const MAX_INO = 0xffff_ffff;
const MAX_REMOVED_LAYERS = 16;
const MAX_MISSED_NAMES = 4096;

const chMount = channel('fuse:mount');
const chUnmount = channel('fuse:unmount');
const chStale = channel('fuse:stale-mount');
const chReadError = channel('fuse:read-error');
const chNotifyError = channel('fuse:notify-error');

/**
 * The imgstream filesystem: one read-only FUSE mount with
 *  - `layers/sha256=<hex>/` — the tree of each added layer, streamed through its {@link LayerContent};
 *  - `images/<escaped-ref>@sha256=<hex>/<N>` — symlinks to the layer directories of an image
 *    (bottom layer first), or to the layer's local directory once it is complete.
 *
 * Metadata requests are answered from the in-memory index without waiting; only reads wait, each
 * bounded by `readTimeoutMs`. Lifecycle: {@link mount}, {@link close} (graceful, idempotent),
 * {@link destroy}.
 */
export class ImgstreamFs {
  private readonly opts: ResolvedOptions;
  private readonly layers = new Map<Digest, LayerView>();
  private readonly localDirs = new Map<Digest, string>();
  private readonly images = new Map<string, ImageRecord>();
  /** Inode ranges ever given to a layer or image, kept so a re-added one gets the same numbers. */
  private readonly inoRanges = new Map<string, { base: number; count: number }>();
  private nextIno = FIRST_DYNAMIC_INO;
  private readonly inflight = new Set<AbortController>();
  private readonly warmers = new Set<PageCacheWarmer>();
  /** Removed layers, for reads of files opened before the removal (reads come by path: there is no open()). */
  private readonly removed = new Map<Digest, LayerView>();
  private readonly createdMs = Date.now();
  private fuse: FuseInstance | undefined;
  /** With negative entries: the connection's /dev/fuse descriptor and the pinned `layers/` and `images/`. */
  private notify: { fd: number; layers: PinnedDirectory; images: PinnedDirectory } | undefined;
  /** Drops of cached misses in progress (see {@link visible}). */
  private revalidating: Promise<void> = Promise.resolve();
  /**
   * With negative entries: names in `layers/` (layer directory names only) and `images/` that a
   * lookup was answered ENOENT for, so the kernel may have cached the miss; adding one drops it.
   * Past {@link MAX_MISSED_NAMES} every add drops (`overflow`).
   */
  private readonly missed = { layers: new Set<string>(), images: new Set<string>(), overflow: false };
  private mounting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private closed = false;
  private readonly onExit = (): void => {
    // Last resort when the process exits without close(): detach the mount so no stale one is left.
    if (this.fuse !== undefined) spawnSync('fusermount', ['-uz', this.opts.mountPoint], { stdio: 'ignore', timeout: 5000 });
  };

  constructor(options: ImgstreamFsOptions = {}) {
    this.opts = {
      mountPoint: resolvePath(options.mountPoint ?? defaults.fuse.mountPoint),
      readTimeoutMs: positive('readTimeoutMs', options.readTimeoutMs ?? defaults.fuse.readTimeoutMs),
      maxReadBytes: positive('maxReadBytes', options.maxReadBytes ?? defaults.fuse.maxReadBytes),
      maxReadaheadBytes: positive('maxReadaheadBytes', options.maxReadaheadBytes ?? defaults.fuse.maxReadaheadBytes),
      cacheTimeoutMs: nonNegative('cacheTimeoutMs', options.cacheTimeoutMs ?? defaults.fuse.cacheTimeoutMs),
      negativeTimeoutMs: nonNegative('negativeTimeoutMs', options.negativeTimeoutMs ?? defaults.fuse.negativeTimeoutMs),
      onAbsent: options.onAbsent,
      onLookup: options.onLookup,
      allowOther: options.allowOther ?? true,
      staleCheckTimeoutMs: positive('staleCheckTimeoutMs', options.staleCheckTimeoutMs ?? defaults.fuse.staleCheckTimeoutMs),
      fsName: options.fsName ?? 'imgstream',
      xattrs: options.xattrs ?? true,
    };
    if (!/^[A-Za-z0-9._-]+$/.test(this.opts.fsName)) throw invalidOption('fsName', 'only A-Z a-z 0-9 . _ - are allowed');
  }

  /** The directory the filesystem is (to be) mounted on. */
  get mountPoint(): string {
    return this.opts.mountPoint;
  }

  /** True between a successful mount() and close()/destroy(). */
  get mounted(): boolean {
    return this.fuse !== undefined;
  }

  /** Absolute path of a layer's directory in the mount. */
  layerPath(digest: Digest): string {
    return `${this.opts.mountPoint}/layers/${layerDirName(parseDigest(digest))}`;
  }

  /**
   * Starts a page-cache warm-up: pieces of layer files added to it are read through the mount by a
   * child process (`options.readers` files at once, each file's pieces in order), so a container's
   * first reads of them are page-cache hits (no FUSE request). Pieces of layers not added, or served
   * from a local directory, are skipped. Stopped by {@link close}. Throws IMGSTREAM_CLOSED when the
   * filesystem is not mounted, IMGSTREAM_INVALID_OPTION for `readers` outside 1..64.
   */
  warmPageCache(options: PageCacheWarmerOptions = {}): PageCacheWarmer {
    this.assertOpen();
    if (this.fuse === undefined) throw new ImgstreamError(ErrorCode.CLOSED, 'the imgstream filesystem is not mounted');
    const warmer = new PageCacheWarmer((digest, path) => (this.layers.has(digest) && !this.localDirs.has(digest) ? `${this.layerPath(digest)}/${path}` : undefined), options);
    this.warmers.add(warmer);
    void warmer.done.then(() => this.warmers.delete(warmer));
    return warmer;
  }

  /** Absolute path of an image's directory in the mount. */
  imagePath(ref: string, manifestDigest: Digest): string {
    return `${this.opts.mountPoint}/images/${imageDirName(ref, parseDigest(manifestDigest))}`;
  }

  /**
   * Mounts the filesystem. A stale mount left at the mount point by a crashed process is aborted
   * and detached first. Rejects with IMGSTREAM_FUSE_UNAVAILABLE when fuse-native or libfuse2 is
   * missing, IMGSTREAM_MOUNT_FAILED when the kernel refuses or a live mount is in the way.
   */
  mount(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.closed) return Promise.reject(new ImgstreamError(ErrorCode.CLOSED, 'the imgstream filesystem is closed'));
    this.mounting ??= this.doMount(options.signal).catch((err: unknown) => {
      this.mounting = undefined;
      throw err;
    });
    return this.mounting;
  }

  private async doMount(signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    const Fuse = await loadFuseNative();
    signal?.throwIfAborted();
    // not the mount point itself yet: it may be a hung mount
    await mkdir(dirname(this.opts.mountPoint), { recursive: true });
    // mountinfo has resolved paths; the mount point itself may be a dead mount, so resolve its parent
    const dir = await realpath(dirname(this.opts.mountPoint)).catch(() => dirname(this.opts.mountPoint));
    const mountPoint = `${dir}/${basename(this.opts.mountPoint)}`;
    const stale = await recoverStaleMount(mountPoint, this.opts.staleCheckTimeoutMs);
    if (stale.outcome === 'recovered') publish(chStale, { mountPoint, reason: stale.reason, connection: stale.mount?.dev });
    await mkdir(mountPoint, { recursive: true });
    signal?.throwIfAborted();
    const fuse = new (fuseClass(Fuse, this))(mountPoint, this.ops(), { timeout: this.opts.readTimeoutMs + 10_000 });
    try {
      await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
    } catch (cause) {
      throw new ImgstreamError(ErrorCode.MOUNT_FAILED, `cannot mount FUSE at ${mountPoint}: ${(cause as Error).message}`, { path: mountPoint, cause });
    }
    if (this.closed) {
      await new Promise<void>((resolve) => fuse.unmount(() => resolve()));
      throw new ImgstreamError(ErrorCode.CLOSED, 'the filesystem was closed while mounting');
    }
    this.fuse = fuse;
    process.once('exit', this.onExit);
    if (this.opts.negativeTimeoutMs > 0) {
      try {
        this.notify = await this.addressNegativeEntries(mountPoint);
        // added while the mount was being addressed, after a lookup missed them
        for (const d of this.layers.keys()) this.dropCachedMiss('layers', layerDirName(d));
        for (const name of this.images.keys()) this.dropCachedMiss('images', name);
      } catch (err) {
        await this.detach(true).catch(() => undefined);
        throw err;
      }
    }
    publish(chMount, { mountPoint, recoveredStaleMount: stale.outcome === 'recovered' });
  }

  /**
   * Finds what dropping a cached miss needs (negative entries on): the mount's /dev/fuse
   * descriptor and the kernel's node ids of `layers/` and `images/`, which stay open.
   */
  private async addressNegativeEntries(mountPoint: string): Promise<{ fd: number; layers: PinnedDirectory; images: PinnedDirectory }> {
    const failed = (what: string): ImgstreamError =>
      new ImgstreamError(ErrorCode.MOUNT_FAILED, `cannot cache negative entries on ${mountPoint}: ${what} (set negativeTimeoutMs to 0)`, { path: mountPoint });
    const fd = await findNotifyFd(mountPoint);
    if (fd === undefined) throw failed("this process has no /dev/fuse descriptor that reaches the mount's connection");
    const layers = await pinDirectory(fd, mountPoint, 'layers');
    const images = layers === undefined ? undefined : await pinDirectory(fd, mountPoint, 'images');
    if (layers === undefined || images === undefined) {
      await layers?.handle.close().catch(() => undefined);
      throw failed('the kernel node ids of layers/ and images/ were not found');
    }
    return { fd, layers, images };
  }

  /**
   * Resolves when the layers and images added so far can be looked up: with negative entries on
   * (`negativeTimeoutMs`), a name that was looked up while it was missing stays missing for the
   * kernel until {@link addLayer}/{@link addImage} has dropped that cached miss, which it does in
   * the background. Never rejects (a failed drop is published on `imgstream:fuse:notify-error`).
   */
  visible(): Promise<void> {
    return this.revalidating;
  }

  /** Notes a lookup of a missing name in `layers/` or `images/` (the kernel may cache the miss). */
  private noteMissed(dir: 'layers' | 'images', name: string): void {
    if (this.opts.negativeTimeoutMs === 0 || this.missed.overflow) return;
    const set = this.missed[dir];
    if (set.size >= MAX_MISSED_NAMES) this.missed.overflow = true;
    else set.add(name);
  }

  /** Drops the kernel's cached miss of `name` in a pinned directory, if a lookup may have left one. */
  private dropCachedMiss(dir: 'layers' | 'images', name: string): void {
    const n = this.notify;
    if (n === undefined || (!this.missed[dir].delete(name) && !this.missed.overflow)) return;
    const drop = invalidateEntry(n.fd, n[dir].nodeId, name).then(
      () => undefined,
      (err: unknown) => publish(chNotifyError, { mountPoint: this.opts.mountPoint, dir, name, error: String((err as Error)?.message ?? err) }),
    );
    this.revalidating = Promise.all([this.revalidating, drop]).then(() => undefined);
  }

  /**
   * Adds a layer under `layers/sha256=<hex>/`. Returns false (and changes nothing) when the
   * layer is already there. Throws IMGSTREAM_INVALID_INDEX when the index is unusable (no root,
   * hard link to a missing entry), IMGSTREAM_INVALID_OPTION when the mount serves no xattrs
   * (`xattrs: false`) and the layer needs them (`layerNeedsXattrs`).
   */
  addLayer(digest: Digest, content: LayerContent, options: AddLayerOptions = {}): boolean {
    this.assertOpen();
    const d = parseDigest(digest);
    if (this.layers.has(d)) return false;
    if (!this.opts.xattrs && layerNeedsXattrs(content.index)) {
      throw invalidOption('content', `layer ${d} has xattrs or opaque directories, which this mount does not serve (xattrs: false)`);
    }
    this.removed.delete(d);
    const base = this.allocInos(`layer:${d}`, content.index.entries.size);
    this.layers.set(d, new LayerView(d, content, base));
    if (options.localDir !== undefined) this.localDirs.set(d, resolvePath(options.localDir));
    this.dropCachedMiss('layers', layerDirName(d));
    return true;
  }

  /**
   * Removes a layer's directory: new lookups of it fail. Files already open keep reading (the
   * last {@link MAX_REMOVED_LAYERS} removed layers stay readable). Returns false when absent.
   */
  removeLayer(digest: Digest): boolean {
    const d = parseDigest(digest);
    const view = this.layers.get(d);
    if (view === undefined) return false;
    this.layers.delete(d);
    this.removed.set(d, view);
    if (this.removed.size > MAX_REMOVED_LAYERS) this.removed.delete(this.removed.keys().next().value!);
    return true;
  }

  /** Digests of the layers under `layers/`. */
  listLayers(): Digest[] {
    return [...this.layers.keys()];
  }

  /**
   * Points `images/` entries of this layer at a local directory (the unpacked, complete layer
   * in the local cache), or back at the FUSE layer directory with `undefined`.
   */
  setLayerLocalDir(digest: Digest, localDir: string | undefined): void {
    const d = parseDigest(digest);
    if (localDir === undefined) this.localDirs.delete(d);
    else this.localDirs.set(d, resolvePath(localDir));
  }

  /**
   * Adds `images/<escaped-ref>@sha256=<hex>/` with one symlink per layer, `0` the bottom layer.
   * Layers need not be added yet (the links dangle until they are). Returns the directory's path.
   */
  addImage(ref: string, manifestDigest: Digest, layerDigests: readonly Digest[]): string {
    this.assertOpen();
    if (ref === '') throw invalidOption('ref', 'must not be empty');
    const md = parseDigest(manifestDigest, 'manifestDigest');
    const layers = layerDigests.map((d) => parseDigest(d, 'layerDigests'));
    const name = imageDirName(ref, md);
    if (Buffer.byteLength(name) > 255) throw invalidOption('ref', 'the escaped image name is longer than 255 bytes');
    const ino = this.allocInos(`image:${name}`, 1 + layers.length);
    this.images.set(name, { ref, manifestDigest: md, name, layers, ino, addedMs: Date.now() });
    this.dropCachedMiss('images', name);
    return `${this.opts.mountPoint}/images/${name}`;
  }

  /** Removes an image's directory. Returns false when absent. */
  removeImage(ref: string, manifestDigest: Digest): boolean {
    return this.images.delete(imageDirName(ref, parseDigest(manifestDigest)));
  }

  /** Unmounts cleanly (pending reads fail with EIO). Idempotent; the object cannot be used after. */
  close(): Promise<void> {
    this.closing ??= this.shutdown(new ImgstreamError(ErrorCode.CLOSED, 'the imgstream filesystem is closing'), false);
    return this.closing;
  }

  /** Aborts pending reads with `err`, aborts the FUSE connection and detaches the mount. */
  destroy(err?: unknown): Promise<void> {
    this.closing ??= this.shutdown(err ?? new ImgstreamError(ErrorCode.CLOSED, 'the imgstream filesystem was destroyed'), true);
    return this.closing;
  }

  private async shutdown(reason: unknown, force: boolean): Promise<void> {
    this.closed = true;
    const warmers = [...this.warmers].map((w) => w.stop());
    for (const ac of this.inflight) ac.abort(reason);
    await Promise.all(warmers);
    await this.mounting?.catch(() => undefined);
    await this.detach(force);
  }

  /** Unmounts (aborting the connection first); nothing when not mounted. */
  private async detach(force: boolean): Promise<void> {
    // the pinned directories would keep the mount busy
    const pinned = this.notify;
    this.notify = undefined;
    if (pinned !== undefined) await Promise.all([pinned.layers.handle.close(), pinned.images.handle.close()]).catch(() => undefined);
    const fuse = this.fuse;
    if (fuse === undefined) return;
    const mountPoint = this.opts.mountPoint;
    // Pending reads were answered above. Abort the kernel connection before fuse-native's unmount:
    // its native unmount waits synchronously for the FUSE thread, which could otherwise still be
    // inside a request and hang the event loop (seen in close() with a stalled read).
    const m = await findMount(mountPoint).catch(() => undefined);
    if (m !== undefined && m.fsType.startsWith('fuse')) await abortConnection(m.dev);
    try {
      await new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())));
    } catch (cause) {
      // already gone (someone unmounted it) is fine; anything else: detach lazily
      if ((await findMount(mountPoint).catch(() => undefined)) !== undefined) {
        await lazyUnmount(mountPoint).catch((err: unknown) => {
          throw new ImgstreamError(ErrorCode.MOUNT_FAILED, `cannot unmount ${mountPoint}`, { path: mountPoint, cause: err ?? cause });
        });
      }
    } finally {
      this.fuse = undefined;
      process.removeListener('exit', this.onExit);
    }
    publish(chUnmount, { mountPoint, forced: force });
  }

  private assertOpen(): void {
    if (this.closed) throw new ImgstreamError(ErrorCode.CLOSED, 'the imgstream filesystem is closed');
  }

  private allocInos(key: string, count: number): number {
    const prev = this.inoRanges.get(key);
    if (prev !== undefined && prev.count >= count) return prev.base;
    const base = this.nextIno;
    if (base + count > MAX_INO) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, 'the filesystem ran out of 32-bit inode numbers');
    this.nextIno += count;
    this.inoRanges.set(key, { base, count });
    return base;
  }

  // ---- path resolution -------------------------------------------------------------------

  /** Resolves a FUSE path to what it shows, or a positive errno. */
  /** `removed`: also layers removed since the kernel opened the file (reads only). */
  private resolve(path: string, removed = false): Resolved | number {
    if (path === '/') return { kind: 'root' };
    const second = path.indexOf('/', 1);
    const top = second < 0 ? path.slice(1) : path.slice(1, second);
    const rest = second < 0 ? '' : path.slice(second + 1);
    if (top === 'layers') {
      if (rest === '') return { kind: 'layers' };
      const slash = rest.indexOf('/');
      const dirName = slash < 0 ? rest : rest.slice(0, slash);
      const digest = parseLayerDirName(dirName);
      const layer = digest === undefined ? undefined : (this.layers.get(digest) ?? (removed ? this.removed.get(digest) : undefined));
      if (layer === undefined) {
        if (digest !== undefined && !removed) this.noteMissed('layers', dirName);
        return Errno.ENOENT;
      }
      const inner = slash < 0 ? '' : rest.slice(slash + 1);
      const node = layer.lookup(inner);
      if (node === undefined) return this.missing(layer, inner);
      return { kind: 'layer', layer, path: inner, node };
    }
    if (top === 'images') {
      if (rest === '') return { kind: 'images' };
      const slash = rest.indexOf('/');
      const imageName = slash < 0 ? rest : rest.slice(0, slash);
      const image = this.images.get(imageName);
      if (image === undefined) {
        this.noteMissed('images', imageName);
        return Errno.ENOENT;
      }
      if (slash < 0) return { kind: 'image', image };
      const n = rest.slice(slash + 1);
      if (!/^(0|[1-9][0-9]*)$/.test(n)) return n.includes('/') && /^[0-9]+\//.test(n) ? Errno.ENOTDIR : Errno.ENOENT;
      const index = Number(n);
      const layer = image.layers[index];
      if (layer === undefined) return Errno.ENOENT;
      return { kind: 'image-link', image, index, target: this.linkTarget(layer) };
    }
    return Errno.ENOENT;
  }

  /** ENOTDIR when an ancestor of a missing path is not a directory, else ENOENT. */
  private missing(layer: LayerView, path: string): number {
    for (let p = parentOf(path); ; p = parentOf(p)) {
      const node = layer.lookup(p);
      if (node !== undefined && node.entry.type !== 'dir') return Errno.ENOTDIR;
      if (node !== undefined || p === '') {
        this.opts.onAbsent?.(layer.digest, path);
        return Errno.ENOENT;
      }
    }
  }

  private linkTarget(layer: Digest): string {
    return this.localDirs.get(layer) ?? `../../layers/${layerDirName(layer)}`;
  }

  private statOf(r: Resolved): FuseStat {
    switch (r.kind) {
      case 'root':
        return syntheticDirStat(ROOT_INO, 4, this.createdMs);
      case 'layers':
        return syntheticDirStat(LAYERS_INO, 2 + this.layers.size, this.createdMs);
      case 'images':
        return syntheticDirStat(IMAGES_INO, 2 + this.images.size, this.createdMs);
      case 'layer':
        return r.layer.stat(r.node);
      case 'image':
        return syntheticDirStat(r.image.ino, 2, r.image.addedMs);
      case 'image-link':
        return syntheticLinkStat(r.image.ino + 1 + r.index, r.target, r.image.addedMs);
    }
  }

  private xattrsOf(path: string): ReadonlyMap<string, Uint8Array> | undefined | number {
    if (!this.opts.xattrs) return Errno.ENOSYS;
    const r = this.resolve(path);
    if (typeof r === 'number') return r;
    return r.kind === 'layer' ? r.layer.xattrs(r.node) : undefined;
  }

  /** For the fuse-native subclass: one xattr value, or a positive errno. */
  getxattr(path: string, name: string): Uint8Array | number {
    const x = this.xattrsOf(path);
    if (typeof x === 'number') return x;
    return x?.get(name) ?? Errno.ENODATA;
  }

  /** For the fuse-native subclass: xattr names, or a positive errno. */
  listxattr(path: string): string[] | number {
    const x = this.xattrsOf(path);
    if (typeof x === 'number') return x;
    return x === undefined ? [] : [...x.keys()];
  }

  /**
   * Answers the kernel's OPEN of a file: always ENOSYS (as a negative errno), which switches the
   * connection to zero-message opens (the kernel's `no_open`): no OPEN and no RELEASE for files
   * from then on, page cache kept across opens. Reads carry no file handle; they resolve their path.
   */
  open(_path: string): number {
    return -Errno.ENOSYS;
  }

  /** The `-o` option string for libfuse2. */
  fuseOptionString(): string {
    const sec = (this.opts.cacheTimeoutMs / 1000).toString();
    const o = [
      'ro',
      'use_ino',
      'suid',
      'dev',
      'default_permissions',
      'kernel_cache',
      `entry_timeout=${sec}`,
      `attr_timeout=${sec}`,
      `negative_timeout=${(this.opts.negativeTimeoutMs / 1000).toString()}`,
      `max_read=${this.opts.maxReadBytes}`,
      `max_readahead=${this.opts.maxReadaheadBytes}`,
      `fsname=${this.opts.fsName}`,
      'subtype=imgstream',
    ];
    if (this.opts.allowOther) o.push('allow_other');
    return `-o${o.join(',')}`;
  }

  // ---- FUSE operations ---------------------------------------------------------------------

  private ops(): FuseOps {
    const rofs = (...args: unknown[]): void => (args[args.length - 1] as FuseCallback)(-Errno.EROFS);
    const ops = {
      init: (cb: FuseCallback) => cb(0),
      getattr: (path: string, cb: FuseCallback) => {
        const r = this.resolve(path);
        if (typeof r === 'number') return cb(-r);
        cb(0, this.statOf(r));
        if (r.kind === 'layer' && r.path !== '') this.opts.onLookup?.(r.layer.digest, r.path);
      },
      access: (path: string, mode: number, cb: FuseCallback) => {
        const r = this.resolve(path);
        if (typeof r === 'number') return cb(-r);
        cb((mode & 2) !== 0 ? -Errno.EROFS : 0);
      },
      readdir: (path: string, cb: FuseCallback) => this.readdir(path, cb),
      readlink: (path: string, cb: FuseCallback) => {
        const r = this.resolve(path);
        if (typeof r === 'number') return cb(-r);
        if (r.kind === 'image-link') return cb(0, r.target);
        if (r.kind === 'layer' && r.node.entry.type === 'symlink') return cb(0, r.node.entry.linkTarget ?? '');
        cb(-Errno.EINVAL);
      },
      // Zero-message opens: the first OPEN is answered ENOSYS, after which the kernel sends no
      // OPEN or RELEASE for files on this connection (it keeps their page cache, as
      // `kernel_cache` does), sparing two requests per file a container opens. The mount is
      // read-only (the kernel refuses writes with EROFS) and immutable, and a read resolves its
      // path like any other operation, so there is nothing to keep per open file.
      open: (path: string, _flags: number, cb: FuseCallback) => cb(this.open(path)),
      read: (path: string, _fh: number, buf: Buffer, len: number, pos: number, cb: FuseCallback) => {
        const r = this.resolve(path, true);
        if (typeof r === 'number') return cb(-r);
        if (r.kind !== 'layer') return cb(-Errno.EISDIR);
        const file: OpenFile = { layer: r.layer, node: r.node };
        // bytes already in memory (a replayed prefetch pack): answered now, no promise or timer
        const size = r.node.entry.size;
        const want = Math.min(len, size - pos);
        if (!this.closed && want > 0 && r.layer.content.readIntoNow?.(r.node.entry, pos, buf.subarray(0, want)) === true) return cb(want);
        this.read(file, buf, len, pos).then(cb, (err: unknown) => {
          const errno = errnoOf(err);
          publish(chReadError, {
            mountPoint: this.opts.mountPoint,
            layer: file.layer.digest,
            path: file.node.entry.path,
            offset: pos,
            length: len,
            errno,
            error: err instanceof ImgstreamError ? err.toJSON() : { message: String((err as Error)?.message ?? err) },
          });
          cb(-errno);
        });
      },
      statfs: (_path: string, cb: FuseCallback) => {
        let bytes = 0;
        let files = 0;
        for (const l of this.layers.values()) {
          bytes += l.totalBytes;
          files += l.inoCount;
        }
        const blocks = Math.min(MAX_INO, Math.ceil(bytes / 4096));
        cb(0, { bsize: 4096, frsize: 4096, blocks, bfree: 0, bavail: 0, files: Math.min(MAX_INO, files), ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 });
      },
      // every write operation: read-only filesystem
      write: rofs,
      create: rofs,
      truncate: rofs,
      ftruncate: rofs,
      unlink: rofs,
      rename: rofs,
      link: rofs,
      symlink: rofs,
      mkdir: rofs,
      rmdir: rofs,
      chmod: rofs,
      chown: rofs,
      utimens: rofs,
      mknod: rofs,
      setxattr: rofs,
      removexattr: rofs,
      // answered by the subclass (it needs the kernel's buffer size); present so they are registered
      getxattr: rofs,
      listxattr: rofs,
    };
    return ops as unknown as FuseOps;
  }

  private readdir(path: string, cb: FuseCallback): void {
    const r = this.resolve(path);
    if (typeof r === 'number') return cb(-r);
    const names: string[] = ['.', '..'];
    const stats: FuseStat[] = [this.statOf(r)];
    switch (r.kind) {
      case 'root':
        stats.push(this.statOf(r));
        names.push('layers', 'images');
        stats.push(this.statOf({ kind: 'layers' }), this.statOf({ kind: 'images' }));
        break;
      case 'layers':
        stats.push(this.statOf({ kind: 'root' }));
        for (const layer of [...this.layers.values()].sort((a, b) => (a.digest < b.digest ? -1 : 1))) {
          const node = layer.lookup('') as LayerNode;
          names.push(layerDirName(layer.digest));
          stats.push(layer.stat(node));
        }
        break;
      case 'images':
        stats.push(this.statOf({ kind: 'root' }));
        for (const name of [...this.images.keys()].sort()) {
          names.push(name);
          stats.push(this.statOf({ kind: 'image', image: this.images.get(name) as ImageRecord }));
        }
        break;
      case 'image':
        stats.push(this.statOf({ kind: 'images' }));
        r.image.layers.forEach((d, index) => {
          names.push(String(index));
          stats.push(this.statOf({ kind: 'image-link', image: r.image, index, target: this.linkTarget(d) }));
        });
        break;
      case 'layer': {
        if (r.node.entry.type !== 'dir') return cb(-Errno.ENOTDIR);
        const parent = r.path === '' ? this.statOf({ kind: 'layers' }) : r.layer.stat(r.layer.lookup(parentOf(r.path)) as LayerNode);
        stats.push(parent);
        const prefix = r.path === '' ? '' : `${r.path}/`;
        for (const name of r.layer.children(r.node.entry.path) ?? []) {
          const child = r.layer.lookup(prefix + name);
          if (child === undefined) continue;
          names.push(name);
          stats.push(r.layer.stat(child));
        }
        break;
      }
      case 'image-link':
        return cb(-Errno.ENOTDIR);
    }
    cb(0, names, stats);
  }

  private async read(file: OpenFile, buf: Buffer, len: number, pos: number): Promise<number> {
    const { entry } = file.node;
    if (this.closed) throw new ImgstreamError(ErrorCode.CLOSED, 'the imgstream filesystem is closing');
    if (pos >= entry.size || len <= 0) return 0;
    const want = Math.min(len, entry.size - pos);
    const ac = new AbortController();
    this.inflight.add(ac);
    const timer = setTimeout(() => {
      ac.abort(
        new ImgstreamError(ErrorCode.TIMEOUT, `read of ${entry.path} did not complete within ${this.opts.readTimeoutMs} ms`, {
          digest: file.layer.digest,
          path: entry.path,
          range: { offset: pos, length: want },
        }),
      );
    }, this.opts.readTimeoutMs);
    try {
      const { content } = file.layer;
      let got: number;
      if (content.readInto !== undefined) {
        // straight into the kernel's buffer; the source stops writing to it once ac aborts
        got = await abortable(content.readInto(entry, pos, buf.subarray(0, want), { signal: ac.signal }), ac.signal);
      } else {
        const bytes = await abortable(content.read(entry, pos, want, { signal: ac.signal }), ac.signal);
        got = bytes.length;
        if (got === want) buf.set(bytes, 0);
      }
      if (got !== want) {
        throw new ImgstreamError(ErrorCode.CORRUPT_DATA, `content source returned ${got} bytes of ${entry.path}, expected ${want}`, {
          digest: file.layer.digest,
          path: entry.path,
          range: { offset: pos, length: want },
        });
      }
      return want;
    } finally {
      clearTimeout(timer);
      this.inflight.delete(ac);
    }
  }
}


/**
 * fuse-native's Fuse with our mount options and xattr handlers: its own xattr callbacks do not
 * see the kernel's buffer size, so they cannot answer ERANGE.
 */
function fuseClass(Fuse: FuseConstructor, fs: ImgstreamFs): FuseConstructor {
  const Base = Fuse as unknown as new (...args: unknown[]) => object;
  class ImgstreamFuse extends Base {
    _fuseOptions(): string {
      return fs.fuseOptionString();
    }

    _op_getxattr(signal: FuseSignal, path: string, name: string, valueBuf: Buffer): void {
      const v = fs.getxattr(path, name);
      if (typeof v === 'number') return signal(-v, valueBuf.buffer);
      if (valueBuf.length === 0) return signal(v.length, valueBuf.buffer);
      if (v.length > valueBuf.length) return signal(-Errno.ERANGE, valueBuf.buffer);
      valueBuf.set(v, 0);
      signal(v.length, valueBuf.buffer);
    }

    _op_listxattr(signal: FuseSignal, path: string, listBuf: Buffer): void {
      const names = fs.listxattr(path);
      if (typeof names === 'number') return signal(-names, listBuf.buffer);
      const list = Buffer.from(names.map((n) => `${n}\0`).join(''));
      if (listBuf.length === 0) return signal(list.length, listBuf.buffer);
      if (list.length > listBuf.length) return signal(-Errno.ERANGE, listBuf.buffer);
      list.copy(listBuf);
      signal(list.length, listBuf.buffer);
    }
  }
  return ImgstreamFuse as unknown as FuseConstructor;
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw invalidOption(name, `must be a positive number, got ${v}`);
  return v;
}

function nonNegative(name: string, v: number): number {
  if (!Number.isFinite(v) || v < 0) throw invalidOption(name, `must be a number >= 0, got ${v}`);
  return v;
}
