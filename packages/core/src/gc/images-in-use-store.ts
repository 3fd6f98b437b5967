import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { EventEmitter } from 'eventemitter3';
import { writeFileAtomic } from '../cache/atomic-write.js';
import { defaults } from '../defaults.js';
import { isDigest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';

/** Options of {@link ImagesInUseStore}. */
export interface ImagesInUseStoreOptions {
  /** The JSON database file (GKE `images_in_use_db_path`). Default `defaults.engine.imagesInUsePath`. */
  path?: string;
  /** Clock for `sinceMs`, in ms since the epoch. Default `Date.now`. */
  now?: () => number;
}

/** One image in use: the layers it holds. */
export interface ImageInUse {
  /** Key chosen by the caller: an image reference, a manifest digest or a snapshot key. */
  readonly key: string;
  readonly layers: readonly Digest[];
  readonly sinceMs: number;
}

interface FileFormat {
  version: 1;
  images: ImageInUse[];
}

/**
 * Persistent record of images in use and the layers they reference. Lookups are synchronous
 * (in memory); every change is written with an atomic replace (tmp, fsync, rename, fsync dir)
 * before its promise resolves. Writes are serialised.
 */
export interface ImagesInUseStoreEvents {
  /** An image was removed or replaced: these layers lost one reference (GC restarts their grace period). */
  released: (layers: readonly Digest[]) => void;
}

export class ImagesInUseStore extends EventEmitter<ImagesInUseStoreEvents> {
  readonly path: string;
  readonly #now: () => number;
  readonly #images = new Map<string, ImageInUse>();
  #ready: Promise<void> | undefined;
  #writing: Promise<void> = Promise.resolve();

  constructor(options: ImagesInUseStoreOptions = {}) {
    super();
    this.path = options.path ?? defaults.engine.imagesInUsePath;
    this.#now = options.now ?? Date.now;
  }

  /** Loads the file (a missing file is an empty store). Idempotent. */
  ready(): Promise<void> {
    this.#ready ??= this.#load();
    return this.#ready;
  }

  async #load(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return;
      throw err;
    }
    let parsed: FileFormat;
    try {
      parsed = JSON.parse(text) as FileFormat;
      if (parsed.version !== 1 || !Array.isArray(parsed.images)) throw new Error('unknown format');
      for (const img of parsed.images) {
        if (typeof img.key !== 'string' || !Array.isArray(img.layers) || !img.layers.every(isDigest)) throw new Error(`bad image record`);
      }
    } catch (err) {
      throw new ImgstreamError(ErrorCode.INVALID_OPTION, `images-in-use database ${this.path} is malformed: ${(err as Error).message}`, { path: this.path, cause: err });
    }
    for (const img of parsed.images) this.#images.set(img.key, { key: img.key, layers: [...img.layers], sinceMs: Number(img.sinceMs) || 0 });
  }

  /** Records (or replaces) an image in use with its layers. */
  async add(key: string, layers: readonly Digest[]): Promise<void> {
    await this.ready();
    const old = this.#images.get(key);
    this.#images.set(key, { key, layers: [...layers], sinceMs: this.#now() });
    if (old !== undefined) this.emit('released', old.layers);
    await this.#persist();
  }

  /** Forgets an image; its layers become candidates for GC (unless another image holds them). */
  async remove(key: string): Promise<boolean> {
    await this.ready();
    const old = this.#images.get(key);
    if (old === undefined) return false;
    this.#images.delete(key);
    this.emit('released', old.layers);
    await this.#persist();
    return true;
  }

  images(): ImageInUse[] {
    return [...this.#images.values()];
  }

  /** Every layer some image in use references (synchronous, from memory). */
  referencedLayers(): Set<Digest> {
    const out = new Set<Digest>();
    for (const img of this.#images.values()) for (const l of img.layers) out.add(l);
    return out;
  }

  isReferenced(layer: Digest): boolean {
    for (const img of this.#images.values()) if (img.layers.includes(layer)) return true;
    return false;
  }

  #persist(): Promise<void> {
    const snapshot: FileFormat = { version: 1, images: this.images() };
    const write = this.#writing.catch(() => {}).then(() => writeFileAtomic(this.path, JSON.stringify(snapshot, null, 1) + '\n'));
    this.#writing = write;
    return write;
  }
}
