import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from './logger.js';

/** A supervised child: one of the daemon's own subcommands. */
interface Child {
  readonly name: 'fuse-server' | 'snapshotter';
  process: ChildProcess | undefined;
  restarts: number;
  startedMs: number;
}

const RESTART_DELAY_MS = 1_000;
const STOP_TIMEOUT_MS = 15_000;

/**
 * `imgstreamd` without a subcommand: runs `fuse-server` and `snapshotter` as two processes with
 * the same flags, restarts a child that exits, and on SIGTERM/SIGINT stops the snapshotter first,
 * then the FUSE server (which unmounts).
 */
export async function supervise(args: readonly string[], log: Logger): Promise<void> {
  const entry = process.argv[1]!;
  let stopping = false;
  const children: Child[] = [
    { name: 'fuse-server', process: undefined, restarts: 0, startedMs: 0 },
    { name: 'snapshotter', process: undefined, restarts: 0, startedMs: 0 },
  ];
  const start = (child: Child): void => {
    const p = spawn(process.execPath, [...process.execArgv, entry, child.name, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
    child.process = p;
    child.startedMs = Date.now();
    log.info({ child: child.name, pid: p.pid, restarts: child.restarts }, 'started');
    p.on('exit', (code, signal) => {
      if (child.process === p) child.process = undefined;
      if (stopping) return;
      child.restarts++;
      log.warn({ child: child.name, code, signal, restartInMs: RESTART_DELAY_MS }, 'child exited; restarting');
      setTimeout(() => {
        if (!stopping) start(child);
      }, RESTART_DELAY_MS);
    });
  };
  for (const c of children) start(c);
  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal: sig }, 'stopping');
      void (async () => {
        for (const c of [...children].reverse()) await stopChild(c);
        resolve();
      })();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  log.info('stopped');
}

async function stopChild(child: Child): Promise<void> {
  const p = child.process;
  if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}
