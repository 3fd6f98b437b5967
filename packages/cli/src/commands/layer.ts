import { open, writeFile, readFile } from 'node:fs/promises';
import { Command } from 'commander';
import {
  FileRangeReader,
  buildLayerIndex,
  isImgstreamError,
  ErrorCode,
  openLayerIndex,
  readEntryRange,
  serialiseIndex,
  sha256Digest,
  type FileEntry,
  type LayerIndex,
  type RangeReader,
} from '@imgstream/core';

// `imgstream layer …`: the seekable index of a layer blob on local disk (index it, list it, read a
// file through it). The registry forms (`imgstream index|ls|cat REF`) use the same core calls.

async function isGzip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = new Uint8Array(2);
    await fh.read(b, 0, 2, 0);
    return b[0] === 0x1f && b[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

async function fileDigest(reader: FileRangeReader): Promise<`sha256:${string}`> {
  const { createHash } = await import('node:crypto');
  const h = createHash('sha256');
  for await (const c of reader.stream()) h.update(c);
  return `sha256:${h.digest('hex')}`;
}

async function openIndex(blobPath: string, indexPath: string | undefined): Promise<{ index: LayerIndex; reader: FileRangeReader }> {
  const reader = await FileRangeReader.open(blobPath);
  try {
    const layerDigest = await fileDigest(reader);
    const serialisedIndex = indexPath !== undefined ? new Uint8Array(await readFile(indexPath)) : undefined;
    const index = await openLayerIndex(reader, { layerDigest, ...(serialisedIndex !== undefined ? { serialisedIndex } : {}) });
    return { index, reader };
  } catch (err) {
    await reader.close();
    if (isImgstreamError(err, ErrorCode.NOT_STREAMABLE)) {
      throw new UsageError(`${blobPath} has no seekable index: it is not eStargz; build one with \`imgstream layer index ${blobPath} -o FILE\` and pass --index FILE`);
    }
    throw err;
  }
}

/** A user mistake: printed without a stack. */
class UsageError extends Error {
  override name = 'UsageError';
  constructor(message: string) {
    super(message);
    this.stack = message; // main prints the stack: no trace for user errors
  }
}

function modeString(e: FileEntry): string {
  const t = { file: '-', dir: 'd', symlink: 'l', hardlink: 'h', char: 'c', block: 'b', fifo: 'p', whiteout: 'w' }[e.type];
  const rwx = (m: number) => `${m & 4 ? 'r' : '-'}${m & 2 ? 'w' : '-'}${m & 1 ? 'x' : '-'}`;
  return `${t}${rwx(e.mode >> 6)}${rwx(e.mode >> 3)}${rwx(e.mode)}`;
}

export function layerCommand(): Command {
  const layer = new Command('layer').description('Seekable index of a local layer blob (eStargz, gzip or uncompressed tar)');

  layer
    .command('index')
    .description('Build a zran (gzip) or raw (uncompressed) index of a layer blob')
    .argument('<blob>', 'layer blob file')
    .option('-o, --output <file>', 'write the serialised index here')
    .option('--span <bytes>', 'uncompressed bytes between checkpoints (zran) or block size (raw)', (v) => Number.parseInt(v, 10))
    .action(async (blob: string, flags: { output?: string; span?: number }) => {
      const reader = await FileRangeReader.open(blob);
      try {
        const compression = (await isGzip(blob)) ? 'gzip' : 'none';
        const started = Date.now();
        const index = await buildLayerIndex(reader.stream(), { compression, ...(flags.span !== undefined ? { spanBytes: flags.span } : {}) });
        const bytes = serialiseIndex(index.data);
        if (flags.output !== undefined) await writeFile(flags.output, bytes);
        const files = [...index.entries.values()].filter((e) => e.type === 'file').length;
        process.stdout.write(
          `${index.format} index of ${index.layerDigest}: ${index.blocks.length} blocks, ${index.entries.size} entries (${files} files), ` +
            `${bytes.byteLength} bytes (${((100 * bytes.byteLength) / index.layerSize).toFixed(2)} % of the layer), ${Date.now() - started} ms` +
            `${flags.output !== undefined ? `, written to ${flags.output} (${sha256Digest(bytes)})` : ''}\n`,
        );
      } finally {
        await reader.close();
      }
    });

  layer
    .command('ls')
    .description('List a directory of the layer (eStargz, or with --index)')
    .argument('<blob>', 'layer blob file')
    .argument('[path]', 'directory in the layer', '')
    .option('--index <file>', 'serialised zran/raw index of the blob')
    .action(async (blob: string, path: string, flags: { index?: string }) => {
      const { index, reader } = await openIndex(blob, flags.index);
      try {
        const dir = path.replace(/^\/+|\/+$/g, '');
        const names = index.children(dir);
        if (names === undefined) throw new UsageError(`${JSON.stringify(path)} is not a directory of the layer`);
        for (const name of names) {
          const e = index.entries.get(dir === '' ? name : `${dir}/${name}`);
          if (e === undefined) continue;
          const extra = e.type === 'symlink' ? ` -> ${e.linkTarget ?? ''}` : e.type === 'hardlink' ? ` link to ${e.linkTarget ?? ''}` : e.opaque === true ? ' (opaque)' : '';
          process.stdout.write(`${modeString(e)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(e.size).padStart(10)} ${name}${extra}\n`);
        }
      } finally {
        await reader.close();
      }
    });

  layer
    .command('cat')
    .description('Print a file of the layer, fetching only the blocks that hold it')
    .argument('<blob>', 'layer blob file')
    .argument('<path>', 'file in the layer')
    .option('--index <file>', 'serialised zran/raw index of the blob')
    .option('--stats', 'print bytes fetched vs file size on stderr')
    .action(async (blob: string, path: string, flags: { index?: string; stats?: boolean }) => {
      const { index, reader } = await openIndex(blob, flags.index);
      try {
        let p = path.replace(/^\/+|\/+$/g, '');
        const e = index.entries.get(p);
        if (e?.type === 'hardlink' && e.linkTarget !== undefined) p = e.linkTarget;
        const size = index.entries.get(p)?.size ?? 0;
        let fetched = 0;
        const counting: RangeReader = { size: reader.size, readRange: (o, l, opt) => ((fetched += l), reader.readRange(o, l, opt)) };
        const data = await readEntryRange(index, counting, p, 0, size);
        process.stdout.write(data);
        if (flags.stats === true) process.stderr.write(`${index.format}: fetched ${fetched} bytes for a ${size}-byte file (layer ${index.layerSize} bytes)\n`);
      } finally {
        await reader.close();
      }
    });
  return layer;
}
