// Builds eStargz blobs for tests, following the layout described in stargz-snapshotter's
// docs/estargz.md: one gzip member per file chunk, the TOC (stargz.index.json in a tar) in its own
// member, and the 51-byte (or legacy 47-byte) footer. Written from the spec, not copied.
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { buildTar, type TarEntrySpec } from './tar-builder.ts';

export interface EstargzOptions {
  /** Bytes per chunk of a regular file. Default 65536. */
  chunkSize?: number;
  /** Put files smaller than this into the current member (innerOffset > 0). Default 0 (never). */
  minChunkSize?: number;
  legacyFooter?: boolean;
  /** Mutate the TOC before it is written (for bad-input tests). */
  editToc?: (toc: { version: number; entries: Array<Record<string, unknown>> }) => void;
}

export interface BuiltEstargz {
  blob: Uint8Array;
  tocDigest: `sha256:${string}`;
  tocOffset: number;
  toc: { version: number; entries: Array<Record<string, unknown>> };
}

const sha = (b: Uint8Array): `sha256:${string}` => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export function estargzFooter(tocOffset: number, legacy = false): Uint8Array {
  const payload = Buffer.from(`${tocOffset.toString(16).padStart(16, '0')}STARGZ`);
  const extra = legacy ? payload : Buffer.concat([Buffer.from([0x53, 0x47, payload.byteLength, 0]), payload]);
  const head = Buffer.from([0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255, extra.byteLength & 0xff, extra.byteLength >> 8]);
  return new Uint8Array(Buffer.concat([head, extra, Buffer.from([1, 0, 0, 0xff, 0xff]), Buffer.alloc(8)]));
}

export function buildEstargz(entries: readonly TarEntrySpec[], options: EstargzOptions = {}): BuiltEstargz {
  const chunkSize = options.chunkSize ?? 65536;
  const minChunk = options.minChunkSize ?? 0;
  const out: Uint8Array[] = [];
  let pos = 0;
  let current: Uint8Array[] = [];
  let currentLen = 0;
  let memberOffset = 0;
  const closeMember = (): void => {
    if (currentLen === 0) return;
    const gz = gzipSync(Buffer.concat(current));
    out.push(gz);
    pos += gz.byteLength;
    current = [];
    currentLen = 0;
  };
  const append = (b: Uint8Array): void => {
    current.push(b);
    currentLen += b.byteLength;
  };
  const tocEntries: Array<Record<string, unknown>> = [];
  for (const e of entries) {
    if (e.type === 'raw' || e.type === 'sparse') throw new Error(`estargz builder: ${e.type} entries are not supported`);
    const tar = buildTar([e], { noEndMarker: true });
    const content = e.type === 'file' ? Buffer.from(e.content ?? '') : Buffer.alloc(0);
    const padded = content.byteLength === 0 ? 0 : Math.ceil(content.byteLength / 512) * 512;
    const header = tar.subarray(0, tar.byteLength - padded);
    append(header);
    const ent: Record<string, unknown> = {
      name: e.name,
      type: { file: 'reg', dir: 'dir', symlink: 'symlink', hardlink: 'hardlink', char: 'char', block: 'block', fifo: 'fifo' }[e.type],
      modtime: new Date(Math.round(e.mtime ?? 1700000000) * 1000).toISOString().replace(/\.\d+Z$/, 'Z'),
      ...(e.mode !== undefined ? { mode: e.mode } : { mode: e.type === 'dir' ? 0o755 : 0o644 }),
      ...(e.uid ? { uid: e.uid } : {}),
      ...(e.gid ? { gid: e.gid } : {}),
      ...(e.type === 'symlink' || e.type === 'hardlink' ? { linkName: e.target } : {}),
      ...(e.type === 'char' || e.type === 'block' ? { devMajor: e.devMajor, devMinor: e.devMinor } : {}),
      ...(e.xattrs !== undefined ? { xattrs: Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [k, Buffer.from(v).toString('base64')])) } : {}),
    };
    if (e.type === 'file') {
      ent.size = content.byteLength;
      ent.digest = sha(content);
    }
    if (e.type === 'file' && content.byteLength > 0) {
      let written = 0;
      let first = true;
      while (written < content.byteLength) {
        const n = Math.min(chunkSize, content.byteLength - written);
        const chunk = content.subarray(written, written + n);
        const c: Record<string, unknown> = first ? ent : { name: e.name, type: 'chunk' };
        if (content.byteLength < minChunk && currentLen > 0 && first) {
          c.offset = memberOffset;
          c.innerOffset = currentLen;
        } else {
          closeMember();
          memberOffset = pos;
          c.offset = pos;
        }
        if (written > 0) c.chunkOffset = written;
        if (n < content.byteLength - written || written > 0) c.chunkSize = n;
        if (n === content.byteLength) delete c.chunkSize;
        c.chunkDigest = sha(chunk);
        append(chunk);
        tocEntries.push(c);
        written += n;
        first = false;
      }
      append(new Uint8Array(padded - content.byteLength));
    } else {
      tocEntries.push(ent);
    }
  }
  closeMember();
  const tocOffset = pos;
  const toc = { version: 1, entries: tocEntries };
  options.editToc?.(toc);
  const json = Buffer.from(JSON.stringify(toc));
  const tocTar = buildTar([{ type: 'file', name: 'stargz.index.json', content: json }]);
  out.push(gzipSync(tocTar));
  out.push(estargzFooter(tocOffset, options.legacyFooter === true));
  return { blob: new Uint8Array(Buffer.concat(out)), tocDigest: sha(json), tocOffset, toc };
}
