/**
 * A teardown stack: `after(fn)` registers, `run()` calls everything last-first (each once, errors
 * logged, never thrown). Compatible with the test helpers' `Teardown`, so `makeLab` and
 * `startContainerd` register on it as they do on node:test's `t`.
 */
export class Cleanup {
  private readonly fns: Array<() => unknown> = [];
  private running: Promise<void> | null = null;

  after(fn: () => unknown): void {
    this.fns.push(fn);
  }

  /**
   * A nested stack for a shorter-lived phase (one profile, one run): run it yourself when the phase
   * ends; if this stack runs first (failure, signal), it runs the nested one too.
   */
  scope(): Cleanup {
    const child = new Cleanup();
    this.after(() => child.run());
    return child;
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      while (this.fns.length > 0) {
        const fn = this.fns.pop()!;
        try {
          await fn();
        } catch (err) {
          console.error(`cleanup: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
      this.running = null;
    })();
    return this.running;
  }
}

/**
 * Runs `cleanup` on SIGINT/SIGTERM/SIGHUP and then exits with 130/143/129; a second signal exits at
 * once. Returns a function that removes the handlers.
 */
export function cleanupOnSignals(cleanup: Cleanup): () => void {
  let seen = false;
  const handler = (sig: NodeJS.Signals): void => {
    const code = sig === 'SIGINT' ? 130 : sig === 'SIGTERM' ? 143 : 129;
    if (seen) process.exit(code);
    seen = true;
    console.error(`\n${sig}: tearing down (namespaces, processes, mounts)...`);
    void cleanup.run().finally(() => process.exit(code));
  };
  const sigs: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of sigs) process.on(s, handler);
  return () => {
    for (const s of sigs) process.off(s, handler);
  };
}
