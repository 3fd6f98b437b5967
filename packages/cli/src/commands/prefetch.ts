import { spawn, execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Command } from 'commander';
import {
  DockerConfigCredentials,
  ImageStreamer,
  PrefetchRecorder,
  RegistryClient,
  defaults,
  parseReference,
  packPrefetchReport,
  pushPrefetchReport,
  serialisePrefetchReport,
  type StreamedLayer,
} from '@imgstream/core';
import { ImgstreamFs, fetcherLayerContent } from '@imgstream/fuse';
import { dockerConfigPath } from './inspect.js';

const exec = promisify(execFile);

interface RecordFlags {
  plainHttp?: boolean;
  output?: string;
  push?: boolean;
  quietMs: string;
  maxMs: string;
}

/** `imgstream prefetch record REF -- CMD...`: records a prefetch report by running CMD in the streamed image. */
export function prefetchCommand(): Command {
  const prefetch = new Command('prefetch').description('prefetch reports: the start-up working set of an image (docs/prefetch.md)');
  prefetch
    .command('record')
    .description('mount REF (streamed, fresh caches), run CMD chrooted in it, record which blocks it reads until it exits or goes quiet, write or push the report')
    .argument('<ref>', 'image reference (its layers must be streamable: eStargz or indexed)')
    .argument('<cmd...>', 'command to run in the image, after --')
    .option('--plain-http', 'talk plain HTTP to this registry (insecure)')
    .option('-o, --output <file>', 'write the report to FILE')
    .option('--push', 'push the report to the registry as an artifact referring to the image')
    .option('--quiet-ms <ms>', 'stop recording (and the command) after this long without reads', String(defaults.prefetch.quietMs))
    .option('--max-ms <ms>', 'stop recording (and the command) after this long at the latest', String(defaults.prefetch.recordMaxMs))
    .action(async (refText: string, cmd: string[], flags: RecordFlags) => {
      const ref = parseReference(refText);
      const client = new RegistryClient({
        credentials: new DockerConfigCredentials({ path: dockerConfigPath() }),
        ...(flags.plainHttp === true ? { insecureRegistries: [ref.registry] } : {}),
      });
      const dir = await mkdtemp(join(tmpdir(), 'imgstream-prefetch-'));
      const streamer = new ImageStreamer({ registry: client, layerCacheDir: join(dir, 'layers'), imagesInUsePath: join(dir, 'in-use.json'), backgroundDownloads: false });
      let recorder: PrefetchRecorder | undefined;
      // the command's lookups of names a layer does not have (the report's `absent`) and of those it has (its `looked`)
      const fs = new ImgstreamFs({ mountPoint: join(dir, 'mnt'), onAbsent: (layer, path) => recorder?.noteAbsent(layer, path), onLookup: (layer, path) => recorder?.noteLookup(layer, path) });
      const merged = join(dir, 'merged');
      let overlay = false;
      try {
        const image = await client.resolveImage(ref);
        const layers: StreamedLayer[] = [];
        for (const l of image.manifest.layers) layers.push(await streamer.openLayer({ imageRef: refText, manifestDigest: image.digest, layerDigest: l.digest }));
        await mkdir(join(dir, 'mnt'));
        await fs.mount();
        for (const l of layers) fs.addLayer(l.digest, fetcherLayerContent(streamer.fetcher, l));
        for (const d of ['upper', 'work', 'merged']) await mkdir(join(dir, d));
        const lower = layers.map((l) => fs.layerPath(l.digest)).reverse().join(':');
        await exec('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${join(dir, 'upper')},workdir=${join(dir, 'work')}`, merged]);
        overlay = true;
        recorder = new PrefetchRecorder({
          fetcher: streamer.fetcher,
          manifestDigest: image.digest,
          layers: layers.map((l) => l.index),
          quietMs: Number(flags.quietMs),
          recordMaxMs: Number(flags.maxMs),
        });
        // the command runs in a child: this process keeps serving FUSE
        // its output goes to stderr: stdout carries only the report (or the pushed artifact digest)
        const child = spawn('chroot', [merged, ...cmd], { stdio: ['ignore', 2, 2] });
        const exited = new Promise<number | null>((resolve, reject) => {
          child.once('error', reject);
          child.once('exit', (code) => resolve(code));
        });
        const first = await Promise.race([exited.then(() => 'exited' as const), recorder.done.then(() => 'quiet' as const)]);
        if (first === 'quiet' && child.exitCode === null) child.kill('SIGTERM');
        const code = await exited;
        recorder.stop();
        const report = await recorder.done;
        const blocks = report.ranges.reduce((n, r) => n + r.count, 0);
        process.stderr.write(`imgstream: recorded ${blocks} blocks in ${report.ranges.length} ranges of ${report.layers.length} layers, ${report.absent?.length ?? 0} absent paths, ${report.looked?.length ?? 0} looked up (command ${first === 'quiet' ? 'stopped after going quiet' : `exited ${code}`})\n`);
        if (flags.output !== undefined) await writeFile(flags.output, serialisePrefetchReport(report));
        if (flags.push === true) {
          // pushed with its pack: a replay then fetches the file ranges alone, not the blocks around them
          const packed = await packPrefetchReport(report, new Map(layers.map((l) => [l.digest, l])), streamer.fetcher);
          const pushed = packed !== undefined ? { ...report, pack: packed.descriptor } : report;
          process.stdout.write(`${await pushPrefetchReport(client, ref, pushed, packed !== undefined ? { pack: packed.bytes } : {})}\n`);
        }
        if (flags.output === undefined && flags.push !== true) process.stdout.write(`${new TextDecoder().decode(serialisePrefetchReport(report))}\n`);
      } finally {
        if (overlay) await exec('umount', [merged]).catch(() => exec('umount', ['-l', merged]));
        await fs.close().catch(() => undefined);
        await streamer.close();
        await client.close();
        await rm(dir, { recursive: true, force: true });
      }
    });
  return prefetch;
}
