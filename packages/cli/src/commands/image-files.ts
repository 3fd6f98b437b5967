import { Command } from 'commander';
import {
  DockerConfigCredentials,
  MergedTree,
  RegistryClient,
  hostPlatform,
  indexImage,
  openImageLayers,
  parsePlatform,
  parseReference,
  readEntryRange,
  type LayerIndex,
  type RangeReader,
} from '@imgstream/core';
import { dockerConfigPath } from './inspect.js';

// `imgstream index|ls|cat REF`: build and push the seekable indexes of an image, and read its
// merged file tree lazily (only the blocks that hold what is asked for are fetched).

export interface RegistryFlags {
  plainHttp?: boolean;
  platform?: string;
}

export function withRegistryFlags(cmd: Command): Command {
  return cmd.option('--plain-http', 'talk plain HTTP to this registry (insecure)').option('--platform <os/arch[/variant]>', 'platform to select from an index (default: this host)');
}

export function client(registry: string, flags: RegistryFlags): RegistryClient {
  return new RegistryClient({
    credentials: new DockerConfigCredentials({ path: dockerConfigPath() }),
    ...(flags.plainHttp === true ? { insecureRegistries: [registry] } : {}),
  });
}

/** A user mistake or a clear refusal: printed without a stack. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(message: string) {
    super(message);
    this.stack = message; // main prints the stack: no trace for user errors
  }
}

async function openMerged(refText: string, flags: RegistryFlags, c: RegistryClient): Promise<{ tree: MergedTree; layers: Array<{ index: LayerIndex; reader: RangeReader }> }> {
  const ref = parseReference(refText);
  const image = await c.resolveImage(ref, { platform: flags.platform !== undefined ? parsePlatform(flags.platform) : hostPlatform() });
  const opened = await openImageLayers(c, ref, image);
  const missing = opened.filter((l) => l.index === undefined);
  if (missing.length > 0) {
    throw new CliError(
      `${refText}: ${missing.length} of ${opened.length} layers have no seekable index (${missing.map((l) => `${l.descriptor.digest.slice(7, 19)}: ${l.error?.code ?? '?'}`).join(', ')}); ` +
        `run \`imgstream index ${refText}\` first`,
    );
  }
  const layers = opened.map((l) => ({ index: l.index as LayerIndex, reader: l.reader }));
  return { tree: new MergedTree(layers.map((l) => l.index)), layers };
}

const norm = (p: string) => p.replace(/^\/+|\/+$/g, '').replace(/\/+/g, '/');

export function indexCommand(): Command {
  return withRegistryFlags(new Command('index'))
    .description('build seekable indexes for the gzip and uncompressed layers of an image and push them as an OCI artifact referring to it')
    .argument('<ref>', 'image reference')
    .option('--span <bytes>', 'uncompressed bytes between zran checkpoints', (v) => Number.parseInt(v, 10))
    .option('--concurrency <n>', 'layers indexed in parallel', (v) => Number.parseInt(v, 10), 3)
    .action(async (refText: string, flags: RegistryFlags & { span?: number; concurrency: number }) => {
      const ref = parseReference(refText);
      const c = client(ref.registry, flags);
      const tty = process.stderr.isTTY === true;
      const lastPct = new Map<number, number>();
      try {
        const result = await indexImage(c, ref, {
          platform: flags.platform !== undefined ? parsePlatform(flags.platform) : hostPlatform(),
          concurrency: flags.concurrency,
          ...(flags.span !== undefined ? { spanBytes: flags.span } : {}),
          onProgress: (p) => {
            const name = `layer ${p.layer} ${p.digest.slice(7, 19)} (${p.kind})`;
            if (p.state === 'skipped') process.stderr.write(`${name}: ${p.kind === 'estargz' ? 'eStargz, carries its own index' : 'not indexable'}\n`);
            else if (p.state === 'done') process.stderr.write(`${tty ? '\r\x1b[K' : ''}${name}: indexed, ${p.indexBytes ?? 0} bytes\n`);
            else {
              const pct = p.size > 0 ? Math.floor((100 * p.bytesRead) / p.size) : 100;
              // a progress line per layer on a TTY; plain lines every 25 % otherwise
              if (tty) process.stderr.write(`\r\x1b[K${name}: ${pct} %`);
              else if (pct >= (lastPct.get(p.layer) ?? -25) + 25) {
                lastPct.set(p.layer, pct);
                process.stderr.write(`${name}: ${pct} %\n`);
              }
            }
          },
        });
        if (result.artifactDigest === undefined) process.stdout.write(`${refText}: no layer needs an index\n`);
        else process.stdout.write(`${refText} (${result.image.digest}): index artifact ${result.artifactDigest}${result.alreadyIndexed ? ' (already there)' : ' pushed'}\n`);
      } finally {
        await c.close();
      }
    });
}

export function lsCommand(): Command {
  return withRegistryFlags(new Command('ls'))
    .description('list a directory of the merged image, reading only the indexes')
    .argument('<ref>', 'image reference')
    .argument('[path]', 'directory', '/')
    .action(async (refText: string, path: string, flags: RegistryFlags) => {
      const c = client(parseReference(refText).registry, flags);
      try {
        const { tree } = await openMerged(refText, flags, c);
        const dir = norm(path);
        const names = tree.children(dir);
        if (names === undefined) throw new CliError(`${path}: not a directory of ${refText}`);
        for (const name of names) {
          const m = tree.lookup(dir === '' ? name : `${dir}/${name}`);
          if (m === undefined) continue;
          const e = m.entry;
          const t = { file: '-', dir: 'd', symlink: 'l', hardlink: '-', char: 'c', block: 'b', fifo: 'p', whiteout: 'w' }[e.type];
          const extra = e.type === 'symlink' ? ` -> ${e.linkTarget ?? ''}` : '';
          process.stdout.write(`${t}${(e.mode & 0o7777).toString(8).padStart(4, '0')} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(e.size).padStart(10)} ${name}${extra}\n`);
        }
      } finally {
        await c.close();
      }
    });
}

export function catCommand(): Command {
  return withRegistryFlags(new Command('cat'))
    .description('print a file of the merged image, fetching only the blocks that hold it')
    .argument('<ref>', 'image reference')
    .argument('<path>', 'file')
    .option('--stats', 'print bytes fetched vs file size on stderr')
    .action(async (refText: string, path: string, flags: RegistryFlags & { stats?: boolean }) => {
      const c = client(parseReference(refText).registry, flags);
      try {
        const { tree, layers } = await openMerged(refText, flags, c);
        let p = norm(path);
        let m = tree.lookup(p);
        // hard links point into the same layer
        if (m?.entry.type === 'hardlink' && m.entry.linkTarget !== undefined) {
          p = m.entry.linkTarget;
          const target = layers[m.layer]?.index.entries.get(p);
          m = target !== undefined ? { layer: m.layer, entry: target } : undefined;
        }
        if (m === undefined || m.entry.type !== 'file') throw new CliError(`${path}: not a regular file of ${refText}`);
        const layer = layers[m.layer] as { index: LayerIndex; reader: RangeReader };
        let fetched = 0;
        const counting: RangeReader = { size: layer.reader.size, readRange: (o, l, opt) => ((fetched += l), layer.reader.readRange(o, l, opt)) };
        const data = await readEntryRange(layer.index, counting, p, 0, m.entry.size);
        process.stdout.write(data);
        if (flags.stats === true) {
          process.stderr.write(`fetched ${fetched} bytes for a ${m.entry.size}-byte file (layer ${m.layer}, ${layer.index.format}, ${layer.index.layerSize} bytes)\n`);
        }
      } finally {
        await c.close();
      }
    });
}
