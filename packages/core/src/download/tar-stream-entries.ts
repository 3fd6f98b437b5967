import type { Readable } from 'node:stream';
import * as tarStream from 'tar-stream';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { TarEntry, TarEntryType } from './tar-entry.js';

/**
 * TEMPORARY adapter: reads tar entries with `tar-stream` until core's own tar reader (src/tar/)
 * is integrated. Known limit: tar-stream decodes PAX records as UTF-8, so binary
 * `SCHILY.xattr.*` values lose bytes that are not valid UTF-8 (`LIBARCHIVE.xattr.*`, base64, are exact).
 */
export function tarStreamExtractor(): { writable: NodeJS.WritableStream & Readable; entries: AsyncIterable<TarEntry> } {
  const extract = tarStream.extract();
  return { writable: extract as unknown as NodeJS.WritableStream & Readable, entries: adapt(extract) };
}

async function* adapt(extract: tarStream.Extract): AsyncGenerator<TarEntry> {
  for await (const entry of extract) {
    const h = entry.header;
    const type = mapType(h.type ?? 'file', h.name);
    if (type === undefined) {
      entry.resume();
      continue;
    }
    const pax = (h.pax ?? {}) as Record<string, string>;
    const xattrs = new Map<string, Uint8Array>();
    for (const [k, v] of Object.entries(pax)) {
      if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice('SCHILY.xattr.'.length), Buffer.from(v, 'utf8'));
      else if (k.startsWith('LIBARCHIVE.xattr.')) xattrs.set(decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(v, 'base64'));
    }
    const mtimeMs = pax.mtime !== undefined && Number.isFinite(Number(pax.mtime)) ? Number(pax.mtime) * 1000 : (h.mtime?.getTime() ?? 0);
    yield {
      header: {
        path: h.name,
        type,
        mode: (h.mode ?? 0) & 0o7777,
        uid: h.uid ?? 0,
        gid: h.gid ?? 0,
        mtimeMs,
        size: type === 'file' ? (h.size ?? 0) : 0,
        ...(h.linkname != null ? { linkTarget: h.linkname } : {}),
        ...(h.devmajor != null ? { devMajor: h.devmajor } : {}),
        ...(h.devminor != null ? { devMinor: h.devminor } : {}),
        ...(xattrs.size > 0 ? { xattrs } : {}),
      },
      body: entry as AsyncIterable<Uint8Array>,
    };
  }
}

function mapType(type: string, name: string): TarEntryType | undefined {
  switch (type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
      return 'dir';
    case 'symlink':
      return 'symlink';
    case 'link':
      return 'hardlink';
    case 'character-device':
      return 'char';
    case 'block-device':
      return 'block';
    case 'fifo':
      return 'fifo';
    case 'pax-global-header':
      return undefined;
    default:
      throw new ImgstreamError(ErrorCode.INVALID_TAR, `unsupported tar entry type ${type} for ${JSON.stringify(name)}`, { path: name });
  }
}
