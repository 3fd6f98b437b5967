import { readTar, type ReadTarOptions } from '../tar/tar-reader.js';
import { FileTableBuilder } from './file-table.js';
import { ErrorCode, ImgstreamError } from '../errors.js';

/** Reads a tar stream into a file table (bodies are skipped), bounded in the number of entries. */
export async function scanTar(source: AsyncIterable<Uint8Array>, maxEntries: number, options: ReadTarOptions = {}): Promise<FileTableBuilder> {
  const table = new FileTableBuilder();
  let n = 0;
  for await (const e of readTar(source, options)) {
    if (++n > maxEntries) throw new ImgstreamError(ErrorCode.LIMIT_EXCEEDED, `layer has more than ${maxEntries} entries`, { limit: maxEntries });
    table.add({
      name: e.name,
      type: e.type,
      mode: e.mode,
      uid: e.uid,
      gid: e.gid,
      mtimeMs: e.mtimeMs,
      size: e.size,
      linkName: e.linkName,
      devMajor: e.devMajor,
      devMinor: e.devMinor,
      xattrs: e.xattrs,
      regions: e.regions,
    });
  }
  return table;
}
