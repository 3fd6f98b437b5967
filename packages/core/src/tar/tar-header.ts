import { ErrorCode, ImgstreamError } from '../errors.js';

/** Size of a tar block (header or data padding unit). */
export const TAR_BLOCK = 512;

export function tarError(message: string, offset: number, cause?: unknown): ImgstreamError {
  return new ImgstreamError(ErrorCode.INVALID_TAR, `tar: ${message} (at offset ${offset})`, { offset, ...(cause !== undefined ? { cause } : {}) });
}

/** The fields of one raw 512-byte header block, before PAX / GNU extensions are applied. */
export interface RawHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSec: number;
  typeflag: string;
  linkname: string;
  magic: 'ustar' | 'gnu' | 'v7';
  uname: string;
  gname: string;
  devMajor: number;
  devMinor: number;
  /** GNU old sparse ('S'): the sparse map in the header, the extended flag and the real size. */
  gnuSparse?: { regions: Array<{ offset: number; length: number }>; extended: boolean; realSize: number };
}

const decoder = new TextDecoder('utf-8');

function cString(block: Uint8Array, start: number, len: number): string {
  let end = start;
  const limit = start + len;
  while (end < limit && block[end] !== 0) end++;
  return decoder.decode(block.subarray(start, end));
}

/**
 * Parses a numeric header field: octal digits (optionally led by spaces, ended by space or NUL),
 * or GNU base-256 (high bit of the first byte set). An all-NUL/space field is 0. Anything else
 * is an error: parsers never guess.
 */
export function parseNumeric(block: Uint8Array, start: number, len: number, field: string, offset: number): number {
  const first = block[start] ?? 0;
  if (first & 0x80) {
    if (first === 0xff) throw tarError(`negative base-256 value in ${field}`, offset);
    let v = first & 0x7f;
    for (let i = 1; i < len; i++) {
      v = v * 256 + (block[start + i] ?? 0);
      if (v > Number.MAX_SAFE_INTEGER) throw tarError(`${field} too large`, offset);
    }
    return v;
  }
  let i = start;
  const end = start + len;
  while (i < end && block[i] === 0x20) i++;
  let v = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = block[i] ?? 0;
    if (c >= 0x30 && c <= 0x37) {
      v = v * 8 + (c - 0x30);
      digits++;
    } else break;
  }
  for (; i < end; i++) {
    const c = block[i] ?? 0;
    if (c !== 0 && c !== 0x20) throw tarError(`malformed numeric field ${field}`, offset);
  }
  if (digits === 0) return 0;
  if (v > Number.MAX_SAFE_INTEGER) throw tarError(`${field} too large`, offset);
  return v;
}

/** True when the block is all zeros (end-of-archive marker). */
export function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < block.byteLength; i++) if (block[i] !== 0) return false;
  return true;
}

/** Verifies the header checksum (unsigned sum, or the historical signed sum). */
export function verifyChecksum(block: Uint8Array, offset: number): void {
  const stored = parseNumeric(block, 148, 8, 'chksum', offset);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (stored !== unsigned && stored !== signed) throw tarError(`header checksum mismatch (stored ${stored}, computed ${unsigned})`, offset);
}

/** Parses one header block (checksum verified). */
export function parseRawHeader(block: Uint8Array, offset: number): RawHeader {
  verifyChecksum(block, offset);
  const magicBytes = decoder.decode(block.subarray(257, 265));
  const magic: RawHeader['magic'] = magicBytes === 'ustar\u000000' ? 'ustar' : magicBytes === 'ustar  \u0000' ? 'gnu' : 'v7';
  let name = cString(block, 0, 100);
  if (magic === 'ustar') {
    const prefix = cString(block, 345, 155);
    if (prefix !== '') name = `${prefix}/${name}`;
  }
  const typeflag = block[156] === 0 ? '0' : String.fromCharCode(block[156] ?? 0);
  const h: RawHeader = {
    name,
    mode: parseNumeric(block, 100, 8, 'mode', offset),
    uid: parseNumeric(block, 108, 8, 'uid', offset),
    gid: parseNumeric(block, 116, 8, 'gid', offset),
    size: parseNumeric(block, 124, 12, 'size', offset),
    mtimeSec: parseNumeric(block, 136, 12, 'mtime', offset),
    typeflag,
    linkname: cString(block, 157, 100),
    magic,
    uname: magic === 'v7' ? '' : cString(block, 265, 32),
    gname: magic === 'v7' ? '' : cString(block, 297, 32),
    devMajor: magic === 'v7' ? 0 : parseNumeric(block, 329, 8, 'devmajor', offset),
    devMinor: magic === 'v7' ? 0 : parseNumeric(block, 337, 8, 'devminor', offset),
  };
  if (typeflag === 'S') {
    if (magic !== 'gnu') throw tarError('GNU sparse entry without GNU magic', offset);
    h.gnuSparse = {
      regions: parseSparseEntries(block, 386, 4, offset),
      extended: block[482] !== 0,
      realSize: parseNumeric(block, 483, 12, 'realsize', offset),
    };
  }
  return h;
}

/** Parses `count` GNU sparse (offset, numbytes) pairs of 24 bytes at `start`; stops at an empty pair. */
export function parseSparseEntries(block: Uint8Array, start: number, count: number, offset: number): Array<{ offset: number; length: number }> {
  const out: Array<{ offset: number; length: number }> = [];
  for (let i = 0; i < count; i++) {
    const p = start + i * 24;
    if (block[p] === 0) break;
    out.push({ offset: parseNumeric(block, p, 12, 'sparse offset', offset), length: parseNumeric(block, p + 12, 12, 'sparse numbytes', offset) });
  }
  return out;
}

/** Parses PAX extended header records (`LEN key=value\n`); values are kept as raw bytes. */
export function parsePaxRecords(data: Uint8Array, offset: number): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  let p = 0;
  while (p < data.byteLength) {
    let sp = p;
    while (sp < data.byteLength && data[sp] !== 0x20) sp++;
    const lenStr = decoder.decode(data.subarray(p, sp));
    if (!/^[0-9]+$/.test(lenStr)) {
      // trailing NUL padding after the last record is tolerated by every tar; nothing else is
      if (data.subarray(p).every((b) => b === 0)) break;
      throw tarError('malformed PAX record length', offset);
    }
    const len = Number(lenStr);
    const end = p + len;
    if (len < sp - p + 3 || end > data.byteLength || data[end - 1] !== 0x0a) throw tarError('malformed PAX record', offset);
    let eq = sp + 1;
    while (eq < end && data[eq] !== 0x3d) eq++;
    if (eq >= end - 1) throw tarError('PAX record without "="', offset);
    const key = decoder.decode(data.subarray(sp + 1, eq));
    if (key === '') throw tarError('PAX record with an empty key', offset);
    out.set(key, data.slice(eq + 1, end - 1));
    p = end;
  }
  return out;
}

/** Parses a decimal PAX number (optionally with a fraction when `fraction` is true). */
export function parsePaxNumber(value: Uint8Array, key: string, offset: number, fraction = false): number {
  const s = decoder.decode(value);
  const re = fraction ? /^-?[0-9]+(\.[0-9]+)?$/ : /^[0-9]+$/;
  if (!re.test(s)) throw tarError(`malformed PAX ${key} ${JSON.stringify(s.slice(0, 40))}`, offset);
  const v = Number(s);
  if (!Number.isFinite(v) || Math.abs(v) > Number.MAX_SAFE_INTEGER) throw tarError(`PAX ${key} out of range`, offset);
  return v;
}

export function paxString(value: Uint8Array): string {
  return decoder.decode(value);
}
