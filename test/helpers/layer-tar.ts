/** TEST-ONLY: builds layer tars with every entry kind through tar-stream's packer. */
import * as tarStream from 'tar-stream';
import { gzipSync } from 'node:zlib';

export interface LayerEntrySpec {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
  content?: Uint8Array | string;
}

export async function buildLayerTar(entries: LayerEntrySpec[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const e of entries) {
    const content = e.content === undefined ? undefined : Buffer.from(e.content);
    await new Promise<void>((resolve, reject) => {
      pack.entry(
        {
          name: e.name,
          type: e.type ?? 'file',
          mode: e.mode ?? (e.type === 'directory' ? 0o755 : 0o644),
          uid: e.uid ?? 0,
          gid: e.gid ?? 0,
          mtime: e.mtime ?? new Date(1_600_000_000_000),
          ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
          ...(e.devmajor !== undefined ? { devmajor: e.devmajor, devminor: e.devminor ?? 0 } : {}),
          ...(e.pax !== undefined ? { pax: e.pax } : {}),
          ...(content !== undefined ? { size: content.byteLength } : {}),
        },
        content ?? (undefined as unknown as Buffer),
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export function gzip(data: Uint8Array): Buffer {
  return gzipSync(data);
}
