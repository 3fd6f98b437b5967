import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { EventEmitter } from 'eventemitter3';
import { defaults } from '../defaults.js';
import { channel, publish } from '../diagnostics.js';
import { digestHex, isDigest, type Digest } from '../digest.js';
import { fsyncDir, writeFileAtomic } from './atomic-write.js';

const execFileAsync = promisify(execFile);
const cacheChannel = channel('core:layer-cache');

/** Options of {@link LayerCache}. */
export interface LayerCacheOptions {
  /** Directory of unpacked layers (GKE `layer_cache_dir`). Default `defaults.engine.layerCacheDir`. */
  layerCacheDir?: string;
}

/** What the completion marker of a layer records. */
export interface LayerRecord {
  readonly digest: Digest;
  /** sha256 of the uncompressed tar. */
  readonly diffId?: Digest;
  /** Size of the layer blob in bytes. */
  readonly sizeBytes: number;
  readonly completedAtMs: number;
}

/** What {@link LayerCache.ready} found and repaired. */
export interface LayerCacheRepair {
  readonly complete: readonly Digest[];
  /** Names of partial layers, temp dirs and orphan markers that were removed. */
  readonly removed: readonly string[];
}

export interface LayerCacheEvents {
  /** A layer is complete: its directory can be used as an overlayfs lowerdir from now on. */
  complete: (event: { digest: Digest; dir: string }) => void;
  /** A layer was removed (GC); its directory must no longer be used. */
  removed: (event: { digest: Digest }) => void;
  /** The last reader of a layer released it. */
  unpinned: (event: { digest: Digest }) => void;
}

const STAGING = '.staging';
const TRASH = '.trash';
const LAYER_RE = /^sha256=([a-f0-9]{64})$/;
const MARKER_RE = /^sha256=([a-f0-9]{64})\.complete$/;

/**
 * The local layer cache: `layerCacheDir/sha256=<hex>/` holds an unpacked layer usable as an
 * overlayfs lowerdir; `layerCacheDir/sha256=<hex>.complete` is its completion marker. A layer is
 * complete if and only if its marker exists. Commit protocol: unpack into `.staging/`, syncfs,
 * rename into place, fsync the directory, then write the marker atomically (its rename is the
 * commit point). Removal deletes the marker first. At start, {@link ready} removes every
 * directory without a marker, every marker without a directory, and the staging and trash areas.
 */
export class LayerCache extends EventEmitter<LayerCacheEvents> {
  readonly layerCacheDir: string;
  readonly #complete = new Map<Digest, LayerRecord>();
  readonly #pins = new Map<Digest, number>();
  #ready: Promise<LayerCacheRepair> | undefined;

  constructor(options: LayerCacheOptions = {}) {
    super();
    this.layerCacheDir = options.layerCacheDir ?? defaults.engine.layerCacheDir;
  }

  /** Scans the directory and repairs it after a crash. Idempotent; call before anything else. */
  ready(): Promise<LayerCacheRepair> {
    this.#ready ??= this.#scan();
    return this.#ready;
  }

  async #scan(): Promise<LayerCacheRepair> {
    await mkdir(this.layerCacheDir, { recursive: true });
    const names = await readdir(this.layerCacheDir);
    const removed: string[] = [];
    const dirs = new Set<string>();
    const markers = new Set<string>();
    for (const name of names) {
      const full = join(this.layerCacheDir, name);
      if (name === STAGING || name === TRASH || name.endsWith('.tmp')) {
        await rm(full, { recursive: true, force: true });
        removed.push(name);
      } else if (LAYER_RE.test(name)) {
        dirs.add(LAYER_RE.exec(name)![1]!);
      } else if (MARKER_RE.test(name)) {
        markers.add(MARKER_RE.exec(name)![1]!);
      }
    }
    for (const hex of markers) {
      const record = dirs.has(hex) ? await readMarker(join(this.layerCacheDir, `sha256=${hex}.complete`), hex) : undefined;
      if (record === undefined) {
        await rm(join(this.layerCacheDir, `sha256=${hex}.complete`), { force: true });
        removed.push(`sha256=${hex}.complete`);
        continue;
      }
      this.#complete.set(record.digest, record);
    }
    for (const hex of dirs) {
      if (this.#complete.has(`sha256:${hex}`)) continue;
      await rm(join(this.layerCacheDir, `sha256=${hex}`), { recursive: true, force: true });
      removed.push(`sha256=${hex}`);
    }
    await mkdir(join(this.layerCacheDir, STAGING), { recursive: true });
    if (removed.length > 0) await fsyncDir(this.layerCacheDir);
    const repair = { complete: [...this.#complete.keys()], removed };
    publish(cacheChannel, { event: 'ready', ...repair });
    return repair;
  }

  /** True when the layer is complete locally. */
  has(digest: Digest): boolean {
    return this.#complete.has(digest);
  }

  /** The record of a complete layer. */
  record(digest: Digest): LayerRecord | undefined {
    return this.#complete.get(digest);
  }

  /** Complete layers. */
  list(): Digest[] {
    return [...this.#complete.keys()];
  }

  /** The directory of a layer (whether or not it is complete). */
  dirOf(digest: Digest): string {
    return join(this.layerCacheDir, `sha256=${digestHex(digest)}`);
  }

  /**
   * Marks a complete layer as being read so GC leaves it alone. Returns the release function,
   * or undefined when the layer is not complete (read it remotely then).
   */
  pin(digest: Digest): (() => void) | undefined {
    if (!this.#complete.has(digest)) return undefined;
    this.#pins.set(digest, (this.#pins.get(digest) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.#pins.get(digest) ?? 1) - 1;
      if (n <= 0) {
        this.#pins.delete(digest);
        this.emit('unpinned', { digest });
      } else {
        this.#pins.set(digest, n);
      }
    };
  }

  isPinned(digest: Digest): boolean {
    return (this.#pins.get(digest) ?? 0) > 0;
  }

  /** A fresh empty staging directory to unpack a layer into (same filesystem as the cache). */
  async createStaging(digest: Digest): Promise<string> {
    await this.ready();
    const dir = join(this.layerCacheDir, STAGING, `${digestHex(digest)}-${randomBytes(6).toString('hex')}`);
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** Removes a staging directory (after a failed download). */
  async discard(stagingDir: string): Promise<void> {
    await rm(stagingDir, { recursive: true, force: true });
  }

  /** Moves a fully unpacked, verified staging directory into place and marks the layer complete. */
  async commit(stagingDir: string, record: LayerRecord): Promise<string> {
    await this.ready();
    if (this.#complete.has(record.digest)) {
      await this.discard(stagingDir);
      return this.dirOf(record.digest);
    }
    const hex = digestHex(record.digest);
    const dir = this.dirOf(record.digest);
    // every file, directory entry and attribute of the staging tree reaches the disk before the rename
    await execFileAsync('sync', ['-f', stagingDir]);
    await rm(dir, { recursive: true, force: true });
    await rename(stagingDir, dir);
    await fsyncDir(this.layerCacheDir);
    await writeFileAtomic(join(this.layerCacheDir, `sha256=${hex}.complete`), JSON.stringify(record) + '\n');
    this.#complete.set(record.digest, record);
    publish(cacheChannel, { event: 'complete', digest: record.digest, dir });
    this.emit('complete', { digest: record.digest, dir });
    return dir;
  }

  /**
   * Removes a complete layer unless it is pinned (being read). Returns whether it was removed.
   * The marker goes first, so a crash midway leaves an unmarked directory that {@link ready} removes.
   */
  async remove(digest: Digest): Promise<boolean> {
    if (!this.#complete.has(digest) || this.isPinned(digest)) return false;
    this.#complete.delete(digest);
    this.emit('removed', { digest });
    publish(cacheChannel, { event: 'removed', digest });
    const hex = digestHex(digest);
    await unlink(join(this.layerCacheDir, `sha256=${hex}.complete`)).catch(ignoreMissing);
    await fsyncDir(this.layerCacheDir);
    const trash = join(this.layerCacheDir, TRASH, `${hex}-${randomBytes(4).toString('hex')}`);
    await mkdir(join(this.layerCacheDir, TRASH), { recursive: true });
    await rename(this.dirOf(digest), trash).catch(ignoreMissing);
    await rm(trash, { recursive: true, force: true });
    return true;
  }
}

async function readMarker(path: string, hex: string): Promise<LayerRecord | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<LayerRecord>;
    if (parsed.digest !== `sha256:${hex}` || !isDigest(parsed.digest)) return undefined;
    if (parsed.diffId !== undefined && !isDigest(parsed.diffId)) return undefined;
    await stat(path);
    return {
      digest: parsed.digest,
      ...(parsed.diffId !== undefined ? { diffId: parsed.diffId } : {}),
      sizeBytes: typeof parsed.sizeBytes === 'number' ? parsed.sizeBytes : 0,
      completedAtMs: typeof parsed.completedAtMs === 'number' ? parsed.completedAtMs : 0,
    };
  } catch {
    return undefined;
  }
}

function ignoreMissing(err: unknown): void {
  if ((err as { code?: string }).code !== 'ENOENT') throw err;
}

