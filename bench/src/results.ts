import { cpus, totalmem } from 'node:os';
import { readFile } from 'node:fs/promises';
import type { BuiltImage } from './images/build-image.ts';
import type { NetworkProfile } from './net/profiles.ts';
import type { ProfileMeasurement } from './net/verify.ts';
import type { WorkingSet } from './physical-limit.ts';
import type { RunResult, ScenarioId } from './scenarios/types.ts';
import { run } from './util/proc.ts';

export interface ScenarioResults {
  status: 'ok' | 'failed' | 'not available';
  reason?: string;
  runs: RunResult[];
}

export interface ProfileResults {
  profile: NetworkProfile;
  measured: ProfileMeasurement;
  qdisc: string;
  images: Record<string, Partial<Record<ScenarioId, ScenarioResults>>>;
}

export interface Environment {
  kernel: string;
  cpus: string;
  memoryBytes: number;
  loadAverageAtEnd: string;
  versions: Record<string, string>;
}

export interface BenchResults {
  started: string;
  finished: string;
  command: string;
  options: { quick: boolean; runs: number; images: string[]; profiles: string[]; scenarios?: ScenarioId[] };
  environment: Environment;
  images: BuiltImage[];
  workingSets: Record<string, WorkingSet>;
  profiles: ProfileResults[];
}

export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function summarize(values: readonly number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const median = n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  return { median, min: s[0]!, max: s[n - 1]!, n };
}

const firstLine = async (argv: string[]): Promise<string> =>
  run(argv, { timeoutMs: 10_000 })
    .then((r) => (r.stdout || r.stderr).split('\n')[0]!.trim())
    .catch(() => 'unknown');

export async function collectEnvironment(): Promise<Environment> {
  const c = cpus();
  return {
    kernel: (await readFile('/proc/sys/kernel/osrelease', 'utf8')).trim(),
    cpus: `${c.length} × ${c[0]?.model ?? 'unknown'}`,
    memoryBytes: totalmem(),
    loadAverageAtEnd: (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' '),
    versions: {
      node: process.version,
      containerd: await firstLine(['containerd', '--version']),
      runc: await firstLine(['runc', '--version']),
      'docker-registry': await firstLine(['docker-registry', '--version']),
      skopeo: await firstLine(['skopeo', '--version']),
      debian: (await readFile('/etc/debian_version', 'utf8')).trim(),
    },
  };
}
