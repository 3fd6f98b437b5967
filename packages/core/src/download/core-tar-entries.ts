import { PassThrough } from 'node:stream';
import { readTar, type TarEntry as ReadTarEntry } from '../tar/tar-reader.js';
import type { TarEntry } from './tar-entry.js';

const ZEROS = new Uint8Array(1 << 16);

/** The content of a (possibly sparse) entry with holes expanded to zeros, `size` bytes in all. */
async function* expanded(e: ReadTarEntry): AsyncGenerator<Uint8Array> {
  if (!e.sparse) {
    yield* e.body;
    return;
  }
  const it = e.body[Symbol.asyncIterator]();
  let pending: Uint8Array = new Uint8Array(0);
  let pos = 0;
  const zeros = function* (n: number): Generator<Uint8Array> {
    for (let left = n; left > 0; left -= ZEROS.byteLength) yield ZEROS.subarray(0, Math.min(left, ZEROS.byteLength));
  };
  for (const region of e.regions) {
    yield* zeros(region.fileOffset - pos);
    let left = region.length;
    while (left > 0) {
      if (pending.byteLength === 0) {
        const r = await it.next();
        if (r.done === true) return; // the reader raises IMGSTREAM_INVALID_TAR for a short body
        pending = r.value;
      }
      const take = Math.min(left, pending.byteLength);
      yield pending.subarray(0, take);
      pending = pending.subarray(take);
      left -= take;
    }
    pos = region.fileOffset + region.length;
  }
  yield* zeros(e.size - pos);
}

/**
 * Feeds the layer unpacker from core's tar reader (`readTar`): write the uncompressed tar into
 * `writable`, consume `entries`. Sparse files come out expanded (holes as zeros); PAX xattrs keep
 * their exact bytes; malformed tars fail with IMGSTREAM_INVALID_TAR.
 */
export function coreTarExtractor(): { writable: PassThrough; entries: AsyncIterable<TarEntry> } {
  const writable = new PassThrough({ highWaterMark: 1 << 20 });
  async function* entries(): AsyncGenerator<TarEntry> {
    for await (const e of readTar(writable as AsyncIterable<Uint8Array>)) {
      yield {
        header: {
          path: e.name,
          type: e.type,
          mode: e.mode,
          uid: e.uid,
          gid: e.gid,
          mtimeMs: e.mtimeMs,
          size: e.type === 'file' ? e.size : 0,
          ...(e.type === 'symlink' || e.type === 'hardlink' ? { linkTarget: e.linkName } : {}),
          ...(e.type === 'char' || e.type === 'block' ? { devMajor: e.devMajor, devMinor: e.devMinor } : {}),
          ...(e.xattrs.size > 0 ? { xattrs: e.xattrs } : {}),
        },
        body: e.type === 'file' ? expanded(e) : e.body,
      };
    }
  }
  return { writable, entries: entries() };
}
