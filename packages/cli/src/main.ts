import { Command } from 'commander';

const program = new Command('imgstream')
  .description('Image streaming for containerd: inspect, index and read images from any OCI registry.')
  .version('0.1.0');

await program.parseAsync(process.argv);
