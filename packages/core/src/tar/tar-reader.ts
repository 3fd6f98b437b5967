import { defaults } from '../defaults.js';
import { ByteReader } from './byte-reader.js';
import {
  TAR_BLOCK,
  isZeroBlock,
  parsePaxNumber,
  parsePaxRecords,
  parseRawHeader,
  parseSparseEntries,
  paxString,
  tarError,
  type RawHeader,
} from './tar-header.js';

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

/** A region of a (sparse) file's content and where its bytes are in the uncompressed tar stream. */
export interface TarDataRegion {
  /** Offset of the region in the file. */
  readonly fileOffset: number;
  readonly length: number;
  /** Offset of the region's first byte in the uncompressed tar stream. */
  readonly streamOffset: number;
}

/** One tar entry with PAX / GNU extensions applied. */
export interface TarEntry {
  /** The entry name as stored (after PAX `path` / GNU long name / sparse name), not normalised. */
  readonly name: string;
  readonly type: TarEntryType;
  /** `mode & 0o7777`. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly uname: string;
  readonly gname: string;
  /** Milliseconds since the epoch; fractional with sub-second PAX mtimes. */
  readonly mtimeMs: number;
  /** Apparent file size (real size for sparse files); 0 for non-files. */
  readonly size: number;
  /** Link target (symlink target or hard link name), verbatim. */
  readonly linkName: string;
  readonly devMajor: number;
  readonly devMinor: number;
  /** Extended attributes from `SCHILY.xattr.*` (raw values) and `LIBARCHIVE.xattr.*` (base64) PAX records. */
  readonly xattrs: ReadonlyMap<string, Uint8Array>;
  /** All PAX records that applied to this entry (global then local). */
  readonly pax: ReadonlyMap<string, Uint8Array>;
  /** Offset of this entry's (first extension or) header block in the uncompressed stream. */
  readonly headerOffset: number;
  /** Offset of the first stored content byte in the uncompressed stream (after any sparse map). */
  readonly dataOffset: number;
  /** Number of stored content bytes (the sum of the data regions for sparse files). */
  readonly dataSize: number;
  /** Where the content lies: one region for plain files, the data regions for sparse files. */
  readonly regions: readonly TarDataRegion[];
  /** True for GNU or PAX sparse files. */
  readonly sparse: boolean;
  /**
   * The stored content bytes (for sparse files: the data regions, concatenated). Consume it fully
   * (or not at all) before asking for the next entry; unconsumed bytes are skipped.
   */
  readonly body: AsyncIterable<Uint8Array>;
}

/** Options for {@link readTar}. */
export interface ReadTarOptions {
  /** Upper bound on a PAX / GNU long-name extension payload, in bytes. Default `defaults.index.maxTarExtensionBytes` (1 MiB). */
  maxExtensionBytes?: number;
  /** Upper bound on the number of sparse regions of one file. Default 65536. */
  maxSparseRegions?: number;
}

const DEFAULT_MAX_SPARSE = 65536;

function pad(n: number): number {
  return (TAR_BLOCK - (n % TAR_BLOCK)) % TAR_BLOCK;
}

const decoder = new TextDecoder();

/**
 * Reads a tar stream entry by entry. Yields each entry with its header fields, its data offset
 * in the stream and a body iterator. Supports ustar, PAX (local and global), GNU long names and
 * links, GNU old sparse ('S') and PAX sparse 0.1 / 1.0 files. Malformed input -> IMGSTREAM_INVALID_TAR;
 * the archive must end with the end-of-archive marker (a truncated stream is an error).
 */
export async function* readTar(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, options: ReadTarOptions = {}): AsyncGenerator<TarEntry, void, undefined> {
  const maxExt = options.maxExtensionBytes ?? defaults.index.maxTarExtensionBytes;
  const maxSparse = options.maxSparseRegions ?? DEFAULT_MAX_SPARSE;
  const r = new ByteReader(source);
  const globalPax = new Map<string, Uint8Array>();
  try {
    let localPax: Map<string, Uint8Array> | undefined;
    let longName: string | undefined;
    let longLink: string | undefined;
    let entryStart: number | undefined;
    for (;;) {
      const headerOffset = r.position;
      const block = await r.read(TAR_BLOCK);
      if (block.byteLength < TAR_BLOCK) throw tarError('unexpected end of stream in a header (truncated archive?)', headerOffset);
      if (isZeroBlock(block)) {
        if (localPax !== undefined || longName !== undefined || longLink !== undefined) throw tarError('extension header without a following entry', headerOffset);
        const second = await r.read(TAR_BLOCK);
        if (second.byteLength !== 0 && (second.byteLength < TAR_BLOCK || !isZeroBlock(second))) {
          throw tarError('garbage after an end-of-archive block', headerOffset + TAR_BLOCK);
        }
        await r.drain();
        return;
      }
      const h = parseRawHeader(block, headerOffset);
      entryStart ??= headerOffset;
      const readPayload = async (what: string): Promise<Uint8Array> => {
        if (h.size > maxExt) throw tarError(`${what} of ${h.size} bytes exceeds the ${maxExt}-byte limit`, headerOffset);
        const data = await r.read(h.size);
        if (data.byteLength < h.size) throw tarError(`unexpected end of stream in ${what}`, r.position);
        if ((await r.skip(pad(h.size))) < pad(h.size)) throw tarError(`unexpected end of stream in ${what} padding`, r.position);
        return data.slice();
      };
      switch (h.typeflag) {
        case 'x': {
          if (localPax !== undefined) throw tarError('two PAX headers in a row', headerOffset);
          localPax = parsePaxRecords(await readPayload('PAX header'), headerOffset);
          continue;
        }
        case 'g': {
          for (const [k, v] of parsePaxRecords(await readPayload('PAX global header'), headerOffset)) {
            if (v.byteLength === 0) globalPax.delete(k);
            else globalPax.set(k, v);
          }
          entryStart = undefined;
          continue;
        }
        case 'L': {
          if (longName !== undefined) throw tarError('two GNU long names in a row', headerOffset);
          longName = nulTerminated(await readPayload('GNU long name'));
          continue;
        }
        case 'K': {
          if (longLink !== undefined) throw tarError('two GNU long link names in a row', headerOffset);
          longLink = nulTerminated(await readPayload('GNU long link name'));
          continue;
        }
        default:
          break;
      }
      const pax = new Map(globalPax);
      for (const [k, v] of localPax ?? []) pax.set(k, v);
      const entry = await buildEntry(r, h, pax, longName, longLink, entryStart, headerOffset, maxSparse);
      localPax = undefined;
      longName = undefined;
      longLink = undefined;
      entryStart = undefined;
      const stored = entry.dataSize;
      let consumed = 0;
      let bodyStarted = false;
      const body: AsyncIterable<Uint8Array> = {
        [Symbol.asyncIterator]: async function* () {
          if (bodyStarted) throw new Error('tar entry body can be read only once');
          bodyStarted = true;
          while (consumed < stored) {
            const chunk = await r.readSome(stored - consumed);
            if (chunk.byteLength === 0) throw tarError(`unexpected end of stream in the data of ${JSON.stringify(entry.name)}`, r.position);
            consumed += chunk.byteLength;
            yield chunk;
          }
        },
      };
      yield { ...entry, body };
      bodyStarted = true;
      const left = stored - consumed + pad(entry.rawSize);
      if ((await r.skip(left)) < left) throw tarError(`unexpected end of stream in the data of ${JSON.stringify(entry.name)}`, r.position);
    }
  } finally {
    await r.close();
  }
}

function nulTerminated(data: Uint8Array): string {
  const end = data.indexOf(0);
  return decoder.decode(end === -1 ? data : data.subarray(0, end));
}

type BuiltEntry = Omit<TarEntry, 'body'> & { rawSize: number };

async function buildEntry(
  r: ByteReader,
  h: RawHeader,
  pax: Map<string, Uint8Array>,
  longName: string | undefined,
  longLink: string | undefined,
  entryStart: number,
  headerOffset: number,
  maxSparse: number,
): Promise<BuiltEntry> {
  let name = longName ?? h.name;
  let linkName = longLink ?? h.linkname;
  let size = h.size;
  let uid = h.uid;
  let gid = h.gid;
  let uname = h.uname;
  let gname = h.gname;
  let mtimeMs = h.mtimeSec * 1000;
  const xattrs = new Map<string, Uint8Array>();
  for (const [k, v] of pax) {
    switch (k) {
      case 'path':
        name = paxString(v);
        break;
      case 'linkpath':
        linkName = paxString(v);
        break;
      case 'size':
        size = parsePaxNumber(v, k, headerOffset);
        break;
      case 'uid':
        uid = parsePaxNumber(v, k, headerOffset);
        break;
      case 'gid':
        gid = parsePaxNumber(v, k, headerOffset);
        break;
      case 'uname':
        uname = paxString(v);
        break;
      case 'gname':
        gname = paxString(v);
        break;
      case 'mtime':
        mtimeMs = paxMtimeMs(v, headerOffset);
        break;
      default:
        if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice('SCHILY.xattr.'.length), v);
        else if (k.startsWith('LIBARCHIVE.xattr.')) {
          // libarchive: URL-encoded name, base64 value
          const b64 = paxString(v);
          let name: string;
          try {
            name = decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length));
          } catch (err) {
            throw tarError(`malformed ${k}`, headerOffset, err);
          }
          if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || name === '') throw tarError(`malformed ${k}`, headerOffset);
          // SCHILY records win when both name the same attribute
          if (!pax.has(`SCHILY.xattr.${name}`)) xattrs.set(name, new Uint8Array(Buffer.from(b64, 'base64')));
        }
    }
  }
  let type: TarEntryType;
  switch (h.typeflag) {
    case '0':
    case '7':
    case 'S':
      type = 'file';
      break;
    case '1':
      type = 'hardlink';
      break;
    case '2':
      type = 'symlink';
      break;
    case '3':
      type = 'char';
      break;
    case '4':
      type = 'block';
      break;
    case '5':
      type = 'dir';
      break;
    case '6':
      type = 'fifo';
      break;
    default:
      throw tarError(`unsupported entry type ${JSON.stringify(h.typeflag)} for ${JSON.stringify(name)}`, headerOffset);
  }
  // Pre-POSIX archives mark directories with a trailing slash on a regular entry.
  if (type === 'file' && h.typeflag === '0' && name.endsWith('/') && pax.get('GNU.sparse.major') === undefined) type = 'dir';
  if (name === '') throw tarError('entry with an empty name', headerOffset);
  const rawSize = size;
  let dataOffset = r.position;
  let regions: TarDataRegion[] = [];
  let sparse = false;
  let apparent = type === 'file' ? size : 0;
  let dataSize = size;
  const major = pax.get('GNU.sparse.major');
  const minor = pax.get('GNU.sparse.minor');
  if (h.gnuSparse !== undefined) {
    sparse = true;
    const list = [...h.gnuSparse.regions];
    let extended = h.gnuSparse.extended;
    while (extended) {
      const extOffset = r.position;
      const ext = await r.read(TAR_BLOCK);
      if (ext.byteLength < TAR_BLOCK) throw tarError('unexpected end of stream in a GNU sparse extension', extOffset);
      list.push(...parseSparseEntries(ext, 0, 21, extOffset));
      if (list.length > maxSparse) throw tarError(`more than ${maxSparse} sparse regions`, extOffset);
      extended = ext[504] !== 0;
    }
    dataOffset = r.position;
    apparent = h.gnuSparse.realSize;
    regions = sparseRegions(list, dataOffset, apparent, size, headerOffset);
  } else if (type === 'file' && (major !== undefined || pax.has('GNU.sparse.map') || pax.has('GNU.sparse.offset'))) {
    sparse = true;
    const sparseName = pax.get('GNU.sparse.name');
    if (sparseName !== undefined) name = paxString(sparseName);
    const real = pax.get('GNU.sparse.realsize') ?? pax.get('GNU.sparse.size');
    if (real === undefined) throw tarError('PAX sparse file without a real size', headerOffset);
    apparent = parsePaxNumber(real, 'GNU.sparse.realsize', headerOffset);
    if (major !== undefined && paxString(major) === '1' && minor !== undefined && paxString(minor) === '0') {
      // PAX 1.0: the sparse map is at the start of the data, in decimal lines, padded to a block
      const { list, mapBytes } = await readPaxSparseMap(r, size, maxSparse, headerOffset);
      dataOffset = r.position;
      regions = sparseRegions(list, dataOffset, apparent, size - mapBytes, headerOffset);
      dataSize = size - mapBytes;
    } else if (pax.has('GNU.sparse.map')) {
      // PAX 0.1: "offset,numbytes,offset,numbytes..."
      const parts = paxString(pax.get('GNU.sparse.map') ?? new Uint8Array(0)).split(',');
      if (parts.length % 2 !== 0 || parts.some((p) => !/^[0-9]+$/.test(p))) throw tarError('malformed GNU.sparse.map', headerOffset);
      const list: Array<{ offset: number; length: number }> = [];
      for (let i = 0; i < parts.length; i += 2) list.push({ offset: Number(parts[i]), length: Number(parts[i + 1]) });
      if (list.length > maxSparse) throw tarError(`more than ${maxSparse} sparse regions`, headerOffset);
      regions = sparseRegions(list, dataOffset, apparent, size, headerOffset);
    } else {
      throw tarError('unsupported PAX sparse format (only 0.1 and 1.0)', headerOffset);
    }
  } else if (type === 'file') {
    regions = size > 0 ? [{ fileOffset: 0, length: size, streamOffset: dataOffset }] : [];
  }
  // Non-file entries that carry data (some tars store it for hard links) have it skipped; it is never content.
  if (type !== 'file') dataSize = size;
  return {
    name,
    type,
    mode: h.mode & 0o7777,
    uid,
    gid,
    uname,
    gname,
    mtimeMs,
    size: type === 'file' ? apparent : 0,
    linkName,
    devMajor: h.devMajor,
    devMinor: h.devMinor,
    xattrs,
    pax,
    headerOffset: entryStart,
    dataOffset,
    dataSize,
    regions,
    sparse,
    rawSize,
  };
}

function paxMtimeMs(v: Uint8Array, offset: number): number {
  const s = paxString(v);
  if (!/^-?[0-9]+(\.[0-9]+)?$/.test(s)) throw tarError(`malformed PAX mtime ${JSON.stringify(s.slice(0, 40))}`, offset);
  const [int = '0', frac = ''] = s.split('.');
  const sec = Number(int);
  if (!Number.isSafeInteger(sec)) throw tarError('PAX mtime out of range', offset);
  // keep nanosecond precision up to what a double holds
  const fracMs = frac === '' ? 0 : Number(`0.${frac}`) * 1000;
  return sec * 1000 + (s.startsWith('-') ? -fracMs : fracMs);
}

function sparseRegions(
  list: Array<{ offset: number; length: number }>,
  dataOffset: number,
  apparent: number,
  stored: number,
  headerOffset: number,
): TarDataRegion[] {
  const out: TarDataRegion[] = [];
  let stream = dataOffset;
  let lastEnd = 0;
  let total = 0;
  for (const { offset, length } of list) {
    if (offset < lastEnd) throw tarError('sparse regions out of order or overlapping', headerOffset);
    if (offset + length > apparent) throw tarError('sparse region past the real size', headerOffset);
    if (length > 0) out.push({ fileOffset: offset, length, streamOffset: stream });
    stream += length;
    total += length;
    lastEnd = offset + length;
  }
  if (total !== stored) throw tarError(`sparse map covers ${total} bytes but ${stored} are stored`, headerOffset);
  return out;
}

async function readPaxSparseMap(
  r: ByteReader,
  size: number,
  maxSparse: number,
  headerOffset: number,
): Promise<{ list: Array<{ offset: number; length: number }>; mapBytes: number }> {
  // Read block by block until all numbers are parsed.
  let text = '';
  let mapBytes = 0;
  const numbers: number[] = [];
  let expected: number | undefined;
  while (expected === undefined || numbers.length < expected * 2) {
    if (mapBytes + TAR_BLOCK > size) throw tarError('PAX sparse map runs past the entry data', headerOffset);
    const block = await r.read(TAR_BLOCK);
    if (block.byteLength < TAR_BLOCK) throw tarError('unexpected end of stream in a PAX sparse map', r.position);
    mapBytes += TAR_BLOCK;
    text += decoder.decode(block);
    const lines = text.split('\n');
    text = lines.pop() ?? '';
    for (const line of lines) {
      if (!/^[0-9]+$/.test(line)) throw tarError('malformed PAX sparse map', headerOffset);
      const n = Number(line);
      if (expected === undefined) {
        if (n > maxSparse) throw tarError(`more than ${maxSparse} sparse regions`, headerOffset);
        expected = n;
      } else if (numbers.length < expected * 2) numbers.push(n);
      else throw tarError('PAX sparse map has extra numbers', headerOffset);
    }
  }
  if (!/^\0*$/.test(text)) throw tarError('PAX sparse map has trailing bytes', headerOffset);
  const list: Array<{ offset: number; length: number }> = [];
  for (let i = 0; i < numbers.length; i += 2) list.push({ offset: numbers[i] ?? 0, length: numbers[i + 1] ?? 0 });
  return { list, mapBytes };
}
