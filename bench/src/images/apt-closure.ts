import { run } from '../util/proc.ts';

/**
 * Packages never put in an image: package-manager machinery that only maintainer scripts use
 * (we unpack with `dpkg-deb -x` and run no scripts).
 */
export const APT_SKIP: ReadonlySet<string> = new Set(['dpkg', 'debconf', 'cdebconf', 'install-info', 'perl-base', 'debianutils', 'init-system-helpers', 'media-types', 'readline-common', 'libpam0g', 'sensible-utils', 'python3-pythran']);

/**
 * The dependency closure of `roots` (Depends + Pre-Depends, first alternative of each `|` group,
 * first provider of a virtual package), minus `APT_SKIP`, sorted. Uses the local apt lists
 * (`apt-get update` first).
 */
export async function aptClosure(roots: readonly string[]): Promise<string[]> {
  const seen = new Set<string>();
  let frontier = roots.filter((r) => !APT_SKIP.has(r));
  for (const r of frontier) seen.add(r);
  for (let round = 0; round < 64 && frontier.length > 0; round++) {
    const { stdout } = await run(['apt-cache', 'depends', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', ...frontier]);
    const next: string[] = [];
    const add = (name: string): void => {
      const n = name.replace(/:any$/, '');
      if (seen.has(n) || APT_SKIP.has(n)) return;
      seen.add(n);
      next.push(n);
    };
    const lines = stdout.split('\n');
    let inAlternatives = false; // a previous line of the current `|` group was already taken
    for (let i = 0; i < lines.length; i++) {
      const m = /^ {2}(\|?)(Pre)?Depends: (.+)$/.exec(lines[i]!);
      if (m === null) continue;
      const continues = m[1] === '|';
      if (!inAlternatives) {
        let target = m[3]!.trim();
        if (target.startsWith('<')) {
          // virtual: its providers follow, indented further
          const provider = /^ {4}(\S+)$/.exec(lines[i + 1] ?? '');
          target = provider?.[1] ?? '';
        }
        if (target !== '') add(target);
      }
      inAlternatives = continues;
    }
    frontier = next;
  }
  return [...seen].sort();
}
