import { Command } from 'commander';
import { ImgstreamError } from '@imgstream/core';
import { inspectCommand } from './commands/inspect.js';
import { catCommand, indexCommand, lsCommand } from './commands/image-files.js';
import { layerCommand } from './commands/layer.js';
import { prefetchCommand } from './commands/prefetch.js';
import { mountCommand } from './commands/mount.js';

const program = new Command('imgstream')
  .description('Image streaming for containerd: inspect, index and read images from any OCI registry.')
  .version('0.1.0');

program.addCommand(inspectCommand());
program.addCommand(indexCommand());
program.addCommand(lsCommand());
program.addCommand(catCommand());
program.addCommand(layerCommand());
program.addCommand(prefetchCommand());
program.addCommand(mountCommand());

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof ImgstreamError) {
    process.stderr.write(`imgstream: ${err.message} [${err.code}]\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`imgstream: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  }
}
