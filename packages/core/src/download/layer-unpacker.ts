import { chmod, chown, lchown, link, lutimes, mkdir, open, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { ErrorCode, ImgstreamError, isImgstreamError } from '../errors.js';
import { mknod, setXattrs, type XattrOp } from './special-files.js';
import type { TarEntry, TarEntryHeader } from './tar-entry.js';

/** Options of {@link unpackLayer}. */
export interface UnpackOptions {
  signal?: AbortSignal;
  /** A directory outside `root` (same filesystem) for the whiteout template and the xattr script. */
  scratchDir: string;
}

export interface UnpackResult {
  readonly entries: number;
  readonly fileBytes: number;
  readonly whiteouts: number;
}

const WHITEOUT_PREFIX = '.wh.';
/** Files up to this size are buffered and written in the background, many at once. */
const SMALL_FILE_BYTES = 256 * 1024;
/** File system operations in flight at once while unpacking. */
const MAX_PENDING_OPS = 32;
const OPAQUE = '.wh..wh..opq';

type Kind = 'dir' | 'symlink' | 'other';

/**
 * Unpacks tar entries into `root` (an empty directory) as an overlayfs lower directory: owners,
 * modes (setuid, setgid, sticky), mtimes, xattrs, hard links, devices and FIFOs are preserved;
 * OCI whiteouts become 0/0 character devices and opaque markers `trusted.overlay.opaque=y`.
 * Extraction is safe: names with `..` or absolute names, writes through a symlink of the layer and
 * hard links to paths outside the layer are refused with IMGSTREAM_UNSAFE_PATH.
 * ENOSPC/EDQUOT become IMGSTREAM_DISK_FULL. The caller removes `root` on failure.
 */
export async function unpackLayer(entries: AsyncIterable<TarEntry>, root: string, options: UnpackOptions): Promise<UnpackResult> {
  const u = new Unpacker(root, options);
  try {
    for await (const entry of entries) {
      options.signal?.throwIfAborted();
      await u.entry(entry);
    }
    await u.finish();
  } catch (err) {
    await u.settle();
    throw mapFsError(err, root);
  }
  return { entries: u.count, fileBytes: u.fileBytes, whiteouts: u.whiteouts };
}

class Unpacker {
  readonly #kinds = new Map<string, Kind>([['', 'dir']]);
  readonly #dirMeta = new Map<string, TarEntryHeader>();
  readonly #xattrs: XattrOp[] = [];
  #template: string | undefined;
  /** Creations running in the background, by path (hard links and replacements wait for them). */
  readonly #creating = new Map<string, Promise<void>>();
  readonly #pending = new Set<Promise<void>>();
  #failure: { error: unknown } | undefined;
  count = 0;
  fileBytes = 0;
  whiteouts = 0;

  constructor(
    readonly root: string,
    readonly options: UnpackOptions,
  ) {}

  async entry({ header, body }: TarEntry): Promise<void> {
    this.count++;
    const path = normalise(header.path);
    const base = posix.basename(path);
    const parent = path === '' ? '' : posix.dirname(path) === '.' ? '' : posix.dirname(path);
    if (path !== '') await this.#ensureParents(parent);

    if (base === OPAQUE) {
      await drain(body);
      this.#xattrs.push({ path: parent, name: 'trusted.overlay.opaque', value: Buffer.from('y') });
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      await drain(body);
      const hidden = posix.join(parent, base.slice(WHITEOUT_PREFIX.length));
      if (hidden === parent || base.length === WHITEOUT_PREFIX.length) throw unsafe(header.path, 'empty whiteout name');
      await this.#replace(hidden, false);
      await link(await this.#whiteoutTemplate(), this.#abs(hidden));
      this.#kinds.set(hidden, 'other');
      this.whiteouts++;
      return;
    }
    if (path === '') {
      await drain(body);
      if (header.type === 'dir') this.#dirMeta.set('', header);
      return;
    }
    const abs = this.#abs(path);
    await this.#replace(path, header.type === 'dir');
    switch (header.type) {
      case 'dir':
        await drain(body);
        if (this.#kinds.get(path) !== 'dir') await mkdir(abs, { mode: 0o700 });
        this.#kinds.set(path, 'dir');
        this.#dirMeta.set(path, header);
        break;
      case 'file': {
        this.#kinds.set(path, 'other');
        if (header.size <= SMALL_FILE_BYTES) {
          const chunks: Uint8Array[] = [];
          for await (const chunk of body) chunks.push(chunk);
          const data = Buffer.concat(chunks);
          this.fileBytes += data.byteLength;
          await this.#background(path, async () => {
            await writeFile(abs, data, { flag: 'wx', mode: 0o600 });
            await this.#applyMeta(abs, header);
          });
          break;
        }
        const fh = await open(abs, 'wx', 0o600);
        try {
          for await (const chunk of body) {
            await fh.write(chunk);
            this.fileBytes += chunk.byteLength;
          }
        } finally {
          await fh.close();
        }
        await this.#background(path, () => this.#applyMeta(abs, header));
        break;
      }
      case 'symlink':
        await drain(body);
        if (header.linkTarget === undefined) throw new ImgstreamError(ErrorCode.INVALID_TAR, `symlink ${path} has no target`, { path });
        await symlink(header.linkTarget, abs);
        this.#kinds.set(path, 'symlink');
        await lchown(abs, header.uid, header.gid);
        await lutimes(abs, header.mtimeMs / 1000, header.mtimeMs / 1000);
        break;
      case 'hardlink': {
        await drain(body);
        const target = normalise(header.linkTarget ?? '');
        if (target === '' || !this.#kinds.has(target) || this.#kinds.get(target) === 'dir') {
          throw unsafe(header.path, `hard link to ${JSON.stringify(header.linkTarget)}, which is not an earlier non-directory entry of the layer`);
        }
        this.#checkNoSymlinkAncestor(target, header.path);
        await this.#creating.get(target);
        this.#throwFailure();
        await link(this.#abs(target), abs);
        this.#kinds.set(path, this.#kinds.get(target)!);
        break;
      }
      case 'char':
      case 'block':
      case 'fifo':
        await drain(body);
        this.#kinds.set(path, 'other');
        await this.#background(path, async () => {
          await mknod(abs, header.type as 'char' | 'block' | 'fifo', header.devMajor ?? 0, header.devMinor ?? 0);
          await this.#applyMeta(abs, header);
        });
        break;
    }
    if (header.xattrs !== undefined && header.type !== 'hardlink') {
      for (const [name, value] of header.xattrs) this.#xattrs.push({ path, name, value });
    }
  }

  /** Runs `op` in the background (bounded); the entry at `path` exists once its promise settles. */
  async #background(path: string, op: () => Promise<void>): Promise<void> {
    this.#throwFailure();
    while (this.#pending.size >= MAX_PENDING_OPS) await Promise.race(this.#pending);
    this.#throwFailure();
    const p: Promise<void> = op()
      .catch((error: unknown) => {
        this.#failure ??= { error };
      })
      .finally(() => {
        this.#pending.delete(p);
        if (this.#creating.get(path) === p) this.#creating.delete(path);
      });
    this.#pending.add(p);
    this.#creating.set(path, p);
  }

  #throwFailure(): void {
    if (this.#failure !== undefined) throw this.#failure.error;
  }

  /** Waits for background work (also on failure, so nothing writes into a directory being removed). */
  async settle(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  async finish(): Promise<void> {
    await this.settle();
    this.#throwFailure();
    await setXattrs(this.root, this.#xattrs, join(this.options.scratchDir, 'xattrs.restore'));
    if (this.#template !== undefined) await rm(this.#template, { force: true });
    // directories last and deepest first: creating children changes their mtime
    const dirs = [...this.#dirMeta.entries()].sort((a, b) => depth(b[0]) - depth(a[0]));
    for (const [path, header] of dirs) {
      if (this.#kinds.get(path) !== 'dir') continue;
      await this.#applyMeta(this.#abs(path), header);
    }
    if (!this.#dirMeta.has('')) await chmod(this.root, 0o755);
  }

  /** chown before chmod: chown clears setuid/setgid. */
  async #applyMeta(abs: string, header: TarEntryHeader): Promise<void> {
    await chown(abs, header.uid, header.gid);
    await chmod(abs, header.mode & 0o7777);
    await utimes(abs, header.mtimeMs / 1000, header.mtimeMs / 1000);
  }

  #abs(path: string): string {
    return path === '' ? this.root : join(this.root, path);
  }

  async #ensureParents(dir: string): Promise<void> {
    if (dir === '') return;
    const kind = this.#kinds.get(dir);
    if (kind === 'dir') return;
    if (kind === 'symlink') throw unsafe(dir, 'a later entry would be written through a symlink');
    if (kind === 'other') throw new ImgstreamError(ErrorCode.INVALID_TAR, `${dir} is not a directory but has children`, { path: dir });
    await this.#ensureParents(posix.dirname(dir) === '.' ? '' : posix.dirname(dir));
    await mkdir(this.#abs(dir), { mode: 0o755 });
    this.#kinds.set(dir, 'dir');
  }

  #checkNoSymlinkAncestor(path: string, original: string): void {
    let p = path;
    while (p !== '' && p !== '.') {
      p = posix.dirname(p);
      if (p === '.') break;
      if (this.#kinds.get(p) === 'symlink') throw unsafe(original, 'hard link target lies behind a symlink');
    }
  }

  /** A later entry for the same path replaces the earlier one (a directory stays when both are directories). */
  async #replace(path: string, keepDir: boolean): Promise<void> {
    const kind = this.#kinds.get(path);
    if (kind === undefined || (kind === 'dir' && keepDir)) return;
    if (kind === 'dir') await this.settle(); // background work may still write below it
    await this.#creating.get(path);
    await rm(this.#abs(path), { recursive: true, force: true });
    for (const k of [...this.#kinds.keys()]) if (k === path || k.startsWith(path + '/')) this.#kinds.delete(k);
    for (const k of [...this.#dirMeta.keys()]) if (k === path || k.startsWith(path + '/')) this.#dirMeta.delete(k);
  }

  async #whiteoutTemplate(): Promise<string> {
    if (this.#template === undefined) {
      const t = join(this.options.scratchDir, 'whiteout');
      await mknod(t, 'char', 0, 0);
      await chmod(t, 0);
      this.#template = t;
    }
    return this.#template;
  }
}

/** Normalises a tar name and refuses names that leave the layer. */
export function normalise(name: string): string {
  if (name.startsWith('/')) throw unsafe(name, 'absolute path');
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw unsafe(name, 'path contains ..');
    if (part.includes('\0')) throw unsafe(name, 'path contains NUL');
    parts.push(part);
  }
  return parts.join('/');
}

function unsafe(path: string, why: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.UNSAFE_PATH, `refusing layer entry ${JSON.stringify(path)}: ${why}`, { path });
}

function depth(path: string): number {
  return path === '' ? 0 : path.split('/').length;
}

async function drain(body: AsyncIterable<Uint8Array>): Promise<void> {
  for await (const _ of body) {
    // discard
  }
}

/** ENOSPC and EDQUOT become IMGSTREAM_DISK_FULL. */
export function mapFsError(err: unknown, where: string): unknown {
  if (isImgstreamError(err)) return err;
  const code = (err as { code?: unknown })?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new ImgstreamError(ErrorCode.DISK_FULL, `disk full while writing ${where}`, { path: where, cause: err });
  }
  return err;
}
