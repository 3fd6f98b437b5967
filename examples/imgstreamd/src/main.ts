import { Command, Option } from 'commander';
import { FLAGS, resolveConfig, type DaemonConfig } from './config.js';
import { runFuseServer } from './fuse-server.js';
import { createLogger, type Logger } from './logger.js';
import { runSnapshotter } from './snapshotter-process.js';
import { supervise } from './supervisor.js';

function addFlags(cmd: Command): Command {
  cmd.option('--config <file>', 'JSON file of flags (keys are the flag names); flags given here win');
  for (const f of FLAGS) {
    const value = f.shown ?? (Array.isArray(f.def) ? f.def.join(',') || 'none' : String(f.def));
    const shown = f.def === undefined ? '' : ` (default: ${value})`;
    cmd.addOption(new Option(f.boolean ? `--${f.flag} [bool]` : `--${f.flag} <value>`, `${f.help}${shown}`));
  }
  return cmd;
}

async function setup(opts: Record<string, unknown>, name: string): Promise<{ config: DaemonConfig; log: Logger }> {
  const flags: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(opts)) flags[k] = v === true ? 'true' : v;
  const config = await resolveConfig(flags, typeof opts.config === 'string' ? opts.config : undefined);
  return { config, log: createLogger({ level: config.logLevel, formatter: config.logFormatter, name }) };
}

/** Runs one process until SIGTERM/SIGINT, then closes it gracefully. */
async function runUntilSignal(log: Logger, start: () => Promise<{ close(): Promise<void> }>): Promise<void> {
  let stop: ((sig: NodeJS.Signals) => void) | undefined;
  const stopped = new Promise<NodeJS.Signals>((resolve) => (stop = resolve));
  process.once('SIGTERM', () => stop!('SIGTERM'));
  process.once('SIGINT', () => stop!('SIGINT'));
  const service = await start();
  const sig = await stopped;
  log.info({ signal: sig }, 'shutting down');
  await service.close();
}

const program = new Command('imgstreamd')
  .description(
    'imgstream node daemon. Without a subcommand it supervises two processes, like GKE\'s node: the FUSE server ' +
      '(streaming engine + FUSE mount) and the containerd proxy snapshotter, which talk over --control_socket.',
  )
  .enablePositionalOptions()
  .passThroughOptions();
addFlags(program).action(async (opts: Record<string, unknown>) => {
  const { log } = await setup(opts, 'supervisor');
  await supervise(process.argv.slice(2), log);
});
addFlags(program.command('fuse-server').description('run only the FUSE server (owns the mount, caches and downloads)')).action(async (opts: Record<string, unknown>) => {
  const { config, log } = await setup(opts, 'fuse-server');
  await runUntilSignal(log, () => runFuseServer(config, log));
});
addFlags(program.command('snapshotter').description('run only the containerd proxy snapshotter')).action(async (opts: Record<string, unknown>) => {
  const { config, log } = await setup(opts, 'snapshotter');
  await runUntilSignal(log, () => runSnapshotter(config, log));
});

program.parseAsync(process.argv).then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`imgstreamd: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
