import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { defaults, invalidOption } from '@imgstream/core';

/** The resolved configuration of both processes (flags override the --config file). */
export interface DaemonConfig {
  mountPoint: string;
  /** How long the kernel caches a lookup of a missing name on the mounts, ms (0: not cached). */
  fuseNegativeTimeoutMs: number;
  /** The snapshotter's gRPC socket (containerd's proxy plugin address). */
  socket: string;
  /** The FUSE server's control socket (HTTP/JSON), used by the snapshotter. */
  controlSocket: string;
  snapshotterRoot: string;
  layerCacheDir: string;
  imagesInUsePath: string;
  maxContentCacheBytes: number;
  maxReadBlocks: number;
  readAheadBytes: number;
  layerReadAheadBytes: number;
  layerReadBehindBytes: number;
  maxLayerDownloads: number;
  backgroundDownloads: boolean;
  /** Background downloads wait for this long a silence of on-demand and prefetch fetches, ms. */
  downloadSilenceMs: number;
  /** A background download request starts after waiting this long anyway, ms. */
  downloadMaxDeferMs: number;
  gcPeriodMs: number;
  enablePrefetching: boolean;
  /** Where the node keeps prefetch reports. */
  prefetchReportDir: string;
  /** Recording stops after this long without block reads, ms. */
  prefetchQuietMs: number;
  /** Recording stops after this long at the latest, ms. */
  prefetchRecordMaxMs: number;
  /** Most decoded bytes one replay fetches. */
  prefetchBudgetBytes: number;
  /** Longest time a layer attach (Prepare) waits for the first prefetch batch, ms. */
  prefetchWaitMs: number;
  /** Warm the FUSE mount's page cache with the files of prefetched blocks. */
  prefetchPageCache: boolean;
  /** Files the page-cache warm-up reads at once. */
  prefetchPageCacheReaders: number;
  /** The warm-up leaves out files larger than this (0: none). */
  prefetchPageCacheMaxFileBytes: number;
  /** Push recorded reports to the registry (needs push rights). */
  prefetchPush: boolean;
  prefetchPacks: boolean;
  logLevel: string;
  logFormatter: 'text' | 'json';
  plainHttpRegistries: string[];
  plainHttpLoopback: boolean;
  dockerConfig: string | undefined;
  hostsDir: string | undefined;
  /** `host:port` of the Prometheus endpoint; '' disables it. */
  metricsAddress: string;
  eventReporterType: 'none' | 'k8s';
  k8sNodeName: string | undefined;
  k8sKubeconfig: string | undefined;
}

/** One flag: GKE's name where there is one, its default, and how its text is parsed. */
interface FlagSpec {
  readonly flag: string;
  readonly key: keyof DaemonConfig;
  readonly help: string;
  readonly def: unknown;
  readonly parse: (v: string) => unknown;
  readonly boolean?: boolean;
  /** The default as written on the command line, when it differs from `def`. */
  readonly shown?: string;
}

const str = (v: string): string => v;
const list = (v: string): string[] => v.split(',').map((s) => s.trim()).filter(Boolean);
const bool = (v: string): boolean => {
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new Error(`not a boolean: ${v}`);
};
const int = (v: string): number => {
  if (!/^[0-9]+$/.test(v)) throw new Error(`not a non-negative integer: ${v}`);
  return Number(v);
};

/** Bytes: `1048576`, `512KiB`, `1MiB`, `1MB`, `2GiB`. */
export function parseBytes(v: string): number {
  const m = /^([0-9]+)\s*(B|KB|KiB|K|MB|MiB|M|GB|GiB|G)?$/i.exec(v.trim());
  if (m === null) throw new Error(`not a size: ${v}`);
  const unit = (m[2] ?? 'B').toLowerCase();
  const mult: Record<string, number> = { b: 1, k: 1024, kib: 1024, kb: 1000, m: 1 << 20, mib: 1 << 20, mb: 1e6, g: 2 ** 30, gib: 2 ** 30, gb: 1e9 };
  return Number(m[1]) * mult[unit]!;
}

/** Durations the Go way: `3m`, `30s`, `1h30m`, `500ms`; a bare number is milliseconds. */
export function parseDurationMs(v: string): number {
  if (/^[0-9]+$/.test(v)) return Number(v);
  const re = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  for (const m of v.matchAll(re)) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
    consumed += m[0].length;
  }
  if (consumed !== v.length || consumed === 0) throw new Error(`not a duration: ${v}`);
  return Math.round(total);
}

const e = defaults.engine;
export const FLAGS: readonly FlagSpec[] = [
  { flag: 'mount_point', key: 'mountPoint', help: 'where the FUSE filesystem is mounted', def: defaults.fuse.mountPoint, parse: str },
  {
    flag: 'fuse_negative_timeout',
    key: 'fuseNegativeTimeoutMs',
    help: "how long the kernel caches a lookup of a name a layer does not have (module resolution's misses); the prefetch replay looks up a start-up's misses ahead of the container (0 disables both)",
    def: 3_600_000,
    parse: parseDurationMs,
    shown: '1h',
  },
  { flag: 'socket', key: 'socket', help: "the snapshotter's gRPC socket (containerd proxy_plugins address)", def: '/run/imgstream/snapshotter.sock', parse: str },
  { flag: 'control_socket', key: 'controlSocket', help: 'the control socket between the snapshotter and the FUSE server', def: '/run/imgstream/control.sock', parse: str },
  { flag: 'snapshotter_root', key: 'snapshotterRoot', help: 'snapshot metadata and directories', def: defaults.snapshotter.rootDir, parse: str },
  { flag: 'layer_cache_dir', key: 'layerCacheDir', help: 'local cache of downloaded layers', def: e.layerCacheDir, parse: str },
  { flag: 'images_in_use_db_path', key: 'imagesInUsePath', help: 'images-in-use database (GC)', def: e.imagesInUsePath, parse: str },
  { flag: 'max_content_cache_size_mb', key: 'maxContentCacheBytes', help: 'in-memory content cache bound, MiB', def: e.maxContentCacheBytes, parse: (v) => int(v) * 1024 * 1024, shown: String(e.maxContentCacheBytes / 1024 / 1024) },
  { flag: 'max_read_blocks', key: 'maxReadBlocks', help: 'blocks fetched per read round', def: e.maxReadBlocks, parse: int },
  { flag: 'max_read_ahead', key: 'readAheadBytes', help: 'sequential read-ahead (bytes, or 1MiB, 512KiB)', def: e.readAheadBytes, parse: parseBytes, shown: `${e.readAheadBytes / 1024 / 1024}MiB` },
  { flag: 'layer_read_ahead', key: 'layerReadAheadBytes', help: 'on a read miss, also fetch this much of the layer after the missed block (0 disables)', def: e.layerReadAheadBytes, parse: parseBytes, shown: `${e.layerReadAheadBytes / 1024 / 1024}MiB` },
  { flag: 'layer_read_behind', key: 'layerReadBehindBytes', help: 'on a read miss, also fetch this much of the layer before the missed block (0 disables)', def: e.layerReadBehindBytes, parse: parseBytes, shown: `${e.layerReadBehindBytes / 1024 / 1024}MiB` },
  { flag: 'max_layer_downloads', key: 'maxLayerDownloads', help: 'background layer downloads at once', def: e.maxLayerDownloads, parse: int },
  {
    flag: 'background_downloads',
    key: 'backgroundDownloads',
    help: 'download streamed layers in the background into the layer cache (false: stream only, for diagnosis)',
    def: true,
    parse: bool,
    boolean: true,
  },
  {
    flag: 'download_silence',
    key: 'downloadSilenceMs',
    help: 'background downloads wait until on-demand and prefetch fetches have been quiet this long (3s, 500ms, 0)',
    def: e.downloadSilenceMs,
    parse: parseDurationMs,
    shown: `${e.downloadSilenceMs / 1000}s`,
  },
  { flag: 'download_max_defer', key: 'downloadMaxDeferMs', help: 'a background download request waits for silence at most this long', def: e.downloadMaxDeferMs, parse: parseDurationMs, shown: `${e.downloadMaxDeferMs / 1000}s` },
  { flag: 'gc_period', key: 'gcPeriodMs', help: 'garbage collection period (3m, 30s, ...)', def: e.gcPeriodMs, parse: parseDurationMs, shown: `${e.gcPeriodMs / 60_000}m` },
  {
    flag: 'enable_prefetching',
    key: 'enablePrefetching',
    help: 'record each image\'s start-up working set and fetch it first on later starts (docs/prefetch.md)',
    def: true,
    parse: bool,
    boolean: true,
  },
  { flag: 'prefetch_report_dir', key: 'prefetchReportDir', help: 'where prefetch reports are kept', def: defaults.prefetch.reportDir, parse: str },
  { flag: 'prefetch_quiet', key: 'prefetchQuietMs', help: 'recording stops after this long without reads (3s, 500ms, ...)', def: defaults.prefetch.quietMs, parse: parseDurationMs, shown: `${defaults.prefetch.quietMs / 1000}s` },
  { flag: 'prefetch_record_max', key: 'prefetchRecordMaxMs', help: 'recording stops after this long at the latest', def: defaults.prefetch.recordMaxMs, parse: parseDurationMs, shown: `${defaults.prefetch.recordMaxMs / 1000}s` },
  { flag: 'prefetch_budget', key: 'prefetchBudgetBytes', help: 'most bytes one replay fetches (bytes, or 256MiB, ...)', def: defaults.prefetch.budgetBytes, parse: parseBytes, shown: `${defaults.prefetch.budgetBytes / 1024 / 1024}MiB` },
  { flag: 'prefetch_push', key: 'prefetchPush', help: 'push recorded prefetch reports to the registry as artifacts referring to the image (needs push rights)', def: false, parse: bool, boolean: true },
  {
    flag: 'prefetch_packs',
    key: 'prefetchPacks',
    help: 'give recorded reports a pack (their file ranges, compressed on their own, stored and pushed beside them) and replay a report from its pack when it has one',
    def: true,
    parse: bool,
    boolean: true,
  },
  { flag: 'prefetch_wait', key: 'prefetchWaitMs', help: 'longest time container creation waits for the first prefetch batch', def: defaults.prefetch.waitMs, parse: parseDurationMs, shown: `${defaults.prefetch.waitMs}ms` },
  {
    flag: 'prefetch_page_cache',
    key: 'prefetchPageCache',
    help: 'read the files of prefetched blocks through the mount ahead of the container, so its first reads hit the page cache',
    def: true,
    parse: bool,
    boolean: true,
  },
  {
    flag: 'prefetch_page_cache_readers',
    key: 'prefetchPageCacheReaders',
    help: 'files the page-cache warm-up reads at once (1-64)',
    def: defaults.fuse.pageCacheReaders,
    parse: (v) => {
      const n = int(v);
      if (n < 1 || n > 64) throw new Error(`must be 1-64: ${v}`);
      return n;
    },
  },
  {
    flag: 'prefetch_page_cache_max_file',
    key: 'prefetchPageCacheMaxFileBytes',
    help: 'the page-cache warm-up leaves out files larger than this (0: none): large mapped libraries are read from the replayed pack through FUSE instead',
    def: 4 << 20,
    parse: parseBytes,
    shown: '4MiB',
  },
  { flag: 'log_level', key: 'logLevel', help: 'trace|debug|info|warn|error', def: 'info', parse: str },
  { flag: 'log_formatter', key: 'logFormatter', help: 'text|json', def: 'text', parse: (v) => oneOf(v, ['text', 'json']) },
  { flag: 'plain_http_registries', key: 'plainHttpRegistries', help: 'registry hosts (host:port, comma-separated) reached over plain HTTP', def: [], parse: list },
  { flag: 'plain_http_loopback', key: 'plainHttpLoopback', help: 'reach loopback registries over plain HTTP', def: false, parse: bool, boolean: true },
  { flag: 'docker_config', key: 'dockerConfig', help: 'registry credentials: a Docker config.json', def: undefined, parse: str },
  { flag: 'hosts_dir', key: 'hostsDir', help: 'registry mirrors: a containerd hosts dir (certs.d, hosts.toml)', def: undefined, parse: str },
  { flag: 'metrics_address', key: 'metricsAddress', help: "Prometheus /metrics address (host:port, '' disables)", def: '127.0.0.1:9880', parse: str },
  { flag: 'event_reporter_type', key: 'eventReporterType', help: 'none|k8s (Kubernetes events and node label)', def: 'none', parse: (v) => oneOf(v, ['none', 'k8s']) },
  { flag: 'k8s_node_name', key: 'k8sNodeName', help: 'Node name for events (default: $NODE_NAME)', def: undefined, parse: str },
  { flag: 'k8s_kubeconfig', key: 'k8sKubeconfig', help: 'kubeconfig path (default: in-cluster)', def: undefined, parse: str },
];

function oneOf(v: string, allowed: string[]): string {
  if (!allowed.includes(v)) throw new Error(`must be one of ${allowed.join('|')}, got ${v}`);
  return v;
}

/**
 * Resolves the configuration: defaults, then the JSON `--config` file (keys are the flag names),
 * then flags. Throws IMGSTREAM_INVALID_OPTION naming the flag.
 */
export async function resolveConfig(flags: Readonly<Record<string, unknown>>, configFile?: string): Promise<DaemonConfig> {
  let file: Record<string, unknown> = {};
  if (configFile !== undefined) {
    try {
      file = JSON.parse(await readFile(configFile, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw invalidOption('config', `cannot read ${configFile}: ${(err as Error).message}`);
    }
    for (const k of Object.keys(file)) if (!FLAGS.some((f) => f.flag === k)) throw invalidOption('config', `unknown key ${JSON.stringify(k)} in ${configFile}`);
  }
  const out: Record<string, unknown> = {};
  for (const f of FLAGS) {
    const raw = flags[f.flag] ?? file[f.flag];
    if (raw === undefined) {
      out[f.key] = f.def;
      continue;
    }
    try {
      out[f.key] = typeof raw === 'string' ? f.parse(raw) : Array.isArray(raw) ? raw.map(String) : typeof raw === 'boolean' || typeof raw === 'number' ? (f.boolean ? Boolean(raw) : f.parse(String(raw))) : f.parse(String(raw));
    } catch (err) {
      throw invalidOption(f.flag, (err as Error).message);
    }
  }
  const config = out as unknown as DaemonConfig;
  for (const k of ['mountPoint', 'socket', 'controlSocket', 'snapshotterRoot', 'layerCacheDir', 'imagesInUsePath', 'prefetchReportDir'] as const) {
    if (!isAbsolute(config[k])) throw invalidOption(FLAGS.find((f) => f.key === k)!.flag, `must be an absolute path, got ${config[k]}`);
  }
  return config;
}
