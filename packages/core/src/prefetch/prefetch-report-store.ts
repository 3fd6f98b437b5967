import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FileRangeReader } from '../blob/file-range-reader.js';
import { writeFileAtomic } from '../cache/atomic-write.js';
import { defaults } from '../defaults.js';
import { isDigest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { PrefetchPackDescriptor } from './prefetch-pack.js';
import { parsePrefetchReport, serialisePrefetchReport, type PrefetchReport } from './prefetch-report.js';

/** Options of {@link PrefetchReportStore}. */
export interface PrefetchReportStoreOptions {
  /** Directory of the reports, one file per manifest. Default `defaults.prefetch.reportDir`. */
  dir?: string;
}

/**
 * A node's prefetch reports on disk: `<dir>/<algorithm>-<hex>.json` per manifest, and the packs
 * they name, `<dir>/<algorithm>-<hex>.pack` per pack digest; written atomically.
 */
export class PrefetchReportStore {
  readonly dir: string;

  constructor(options: PrefetchReportStoreOptions = {}) {
    this.dir = options.dir ?? defaults.prefetch.reportDir;
  }

  /** The file of a manifest's report. */
  pathOf(manifestDigest: Digest): string {
    if (!isDigest(manifestDigest)) throw new ImgstreamError(ErrorCode.INVALID_DIGEST, `bad manifest digest ${JSON.stringify(manifestDigest)}`);
    return join(this.dir, `${manifestDigest.replace(':', '-')}.json`);
  }

  /**
   * The stored report of a manifest; undefined when there is none. Throws
   * IMGSTREAM_INVALID_PREFETCH_REPORT when the file is corrupt.
   */
  async get(manifestDigest: Digest): Promise<PrefetchReport | undefined> {
    let bytes: Uint8Array;
    try {
      bytes = await readFile(this.pathOf(manifestDigest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    return parsePrefetchReport(bytes);
  }

  /** Stores a report (replacing the manifest's previous one, and removing that one's pack when it named another). */
  async put(report: PrefetchReport): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    const path = this.pathOf(report.manifestDigest);
    const previous = await this.#packOfStored(report.manifestDigest);
    await writeFileAtomic(path, serialisePrefetchReport(report));
    if (previous !== undefined && previous.digest !== report.pack?.digest) await rm(this.packPathOf(previous), { force: true });
    return path;
  }

  /** The pack a stored report names (undefined: no report, a corrupt one, or no pack). */
  async #packOfStored(manifestDigest: Digest): Promise<PrefetchPackDescriptor | undefined> {
    try {
      return (await this.get(manifestDigest))?.pack;
    } catch {
      return undefined;
    }
  }

  /** The file of a pack. */
  packPathOf(pack: Pick<PrefetchPackDescriptor, 'digest'>): string {
    if (!isDigest(pack.digest)) throw new ImgstreamError(ErrorCode.INVALID_DIGEST, `bad pack digest ${JSON.stringify(pack.digest)}`);
    return join(this.dir, `${pack.digest.replace(':', '-')}.pack`);
  }

  /** Stores a report's pack blob (its members are checked when it is read). */
  async putPack(pack: Pick<PrefetchPackDescriptor, 'digest'>, bytes: Uint8Array): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    const path = this.packPathOf(pack);
    await writeFileAtomic(path, bytes);
    return path;
  }

  /** The stored pack blob (close it when done), or undefined when it is not stored. */
  async openPack(pack: Pick<PrefetchPackDescriptor, 'digest'>): Promise<FileRangeReader | undefined> {
    try {
      return await FileRangeReader.open(this.packPathOf(pack));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Removes a manifest's report and the pack it names; true when there was one. */
  async delete(manifestDigest: Digest): Promise<boolean> {
    const path = this.pathOf(manifestDigest);
    try {
      await readFile(path);
    } catch {
      return false;
    }
    const pack = await this.#packOfStored(manifestDigest);
    await rm(path, { force: true });
    if (pack !== undefined) await rm(this.packPathOf(pack), { force: true });
    return true;
  }
}
