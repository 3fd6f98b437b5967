import type { Cleanup } from '../util/cleanup.ts';

/**
 * The scenarios of issue #7.
 * - `full-pull`: containerd's overlayfs snapshotter, `ctr images pull` then `ctr run` (baseline, a)
 * - `imgstream-cold`: imgstream, empty layer cache (b)
 * - `imgstream-cached`: imgstream, layers already in its local cache (c)
 * - `imgstream-prefetch`: imgstream cold, with the image's prefetch report
 * - `*-read-all` variants: the container checksums every file instead of the entrypoint (d)
 */
export type ScenarioId = 'full-pull' | 'full-pull-read-all' | 'imgstream-cold' | 'imgstream-cached' | 'imgstream-cold-read-all' | 'imgstream-prefetch';

export const SCENARIOS: readonly ScenarioId[] = ['full-pull', 'imgstream-cold', 'imgstream-cached', 'imgstream-prefetch', 'full-pull-read-all', 'imgstream-cold-read-all'];

export const SCENARIO_LABELS: Readonly<Record<ScenarioId, string>> = {
  'full-pull': '(a) full pull + run (overlayfs)',
  'imgstream-cold': '(b) imgstream cold',
  'imgstream-cached': '(c) imgstream, layers cached',
  'imgstream-prefetch': 'imgstream cold + prefetch',
  'full-pull-read-all': '(d) read-everything on (a)',
  'imgstream-cold-read-all': '(d) read-everything on (b)',
};

export const isReadAll = (s: ScenarioId): boolean => s.endsWith('-read-all');

/** One measured run. Times are from the start of the pull (t0), ms. */
export interface RunResult {
  /** Pull (or rpull) finished. */
  pullMs: number;
  /** The container printed READY (or, for read-all, finished). */
  readyMs: number;
  /** The container exited. */
  doneMs: number;
  /** Bytes from the registry to the node, counted at the delay proxy. */
  registryBytes: number;
  /** When the last byte from the registry reached the node (ms from t0): the end of the network phase. */
  lastByteMs: number | null;
  /** Peak RSS per process of interest, bytes. */
  peakRssBytes: Record<string, number>;
  /**
   * imgstream: the background download of every layer, from its first byte to the last layer
   * unpacked and complete in the local layer cache, ms (compare with the full pull's `pullMs`).
   */
  downloadMs?: number;
  /** On-demand vs background bytes, when the daemon reports them. */
  onDemandBytes?: number;
  backgroundBytes?: number;
  /** What the container printed (trimmed), for checking. */
  output: string;
}

/** What the runner gives the imgstream daemon to start with. */
export interface ImgstreamDaemonContext {
  /** Run the daemon in this network namespace (`nsenter --net=PATH`): the node side of the link. */
  readonly netnsPath: string;
  /** The daemon's state (layer cache, metadata). Kept between the runs of `imgstream-cached`. */
  readonly stateDir: string;
  /** Where to serve containerd's Snapshots API. */
  readonly socketPath: string;
  /** `127.0.0.1:PORT` of the registry as seen from the node namespace (plain HTTP). */
  readonly registryHost: string;
  /** Use the image's prefetch report. */
  readonly prefetch: boolean;
  /**
   * With `prefetch`: this run records the report and pushes it (with its pack) to the registry,
   * as the first node to run an image does. The measured runs start without a local report and
   * find it in the registry, as any other node does.
   */
  readonly prefetchRecording?: boolean;
  /** Register teardown here. */
  readonly cleanup: Cleanup;
}

export interface ImgstreamDaemon {
  /** The proxy snapshotter name to configure in containerd and pass to `--snapshotter`. */
  readonly snapshotter: string;
  /** The pids whose peak RSS to report (the FUSE server and the snapshotter). */
  pids(): number[];
  /** Whether the daemon found a prefetch report for the image (the prefetch scenario's measured runs must). */
  prefetchReportFound?(): boolean;
  /** Counters since start, if the daemon has them. */
  stats?(): Promise<{ onDemandBytes: number; backgroundBytes: number }>;
  /** Argv (after `ctr`/`ctr-remote -a ADDR -n NS`) that pulls lazily; default `ctr-remote images rpull`. */
  pullArgs?(ref: string): { binary: string; args: string[] };
  stop(): Promise<void | { downloadMs?: number }>;
}

/**
 * THE PLUG-IN POINT for imgstream: a function that starts imgstreamd for one run and returns its
 * snapshotter name (and pids for RSS). The runner then starts containerd with that proxy
 * snapshotter. Until imgstreamd exists nothing is passed, and the imgstream scenarios are reported
 * as "not available".
 */
export type StartImgstreamDaemon = (ctx: ImgstreamDaemonContext) => Promise<ImgstreamDaemon>;
