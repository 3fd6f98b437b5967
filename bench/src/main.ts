// The time-to-ready benchmark (issue #7). Run from the repository root:
//   npm run bench -w bench -- [--quick] [--images a,b] [--profiles x,y] [--scenarios s,t] [--runs N] [--no-report] [--imgstream MODULE]
//   npm run bench -w bench -- --report-only [RESULTS.json]   re-render docs/benchmarks.md from saved results
// Needs root: network namespaces, tc, mounts, containerd, drop_caches.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildImage, type BuiltImage } from './images/build-image.ts';
import { imageByName, IMAGES } from './images/recipes.ts';
import { EmulatedNetwork, leftovers } from './net/emulated-network.ts';
import { describeProfile, profileByName } from './net/profiles.ts';
import { formatMeasurement, measureProfile, PROBE_PORT, startProbeServer } from './net/verify.ts';
import { measureWorkingSet } from './physical-limit.ts';
import { indexImageForImgstream, pushImage, REGISTRY_PORT, startBenchRegistry, STORAGE_PORT } from './registry/bench-registry.ts';
import { startImgstreamDaemon } from './imgstreamd-plugin.ts';
import { collectEnvironment, type BenchResults, type ProfileResults, type ScenarioResults } from './results.ts';
import { writeReport } from './report.ts';
import { runScenario } from './scenarios/run-scenario.ts';
import { SCENARIOS, SCENARIO_LABELS, type ScenarioId, type StartImgstreamDaemon } from './scenarios/types.ts';
import { Cleanup, cleanupOnSignals } from './util/cleanup.ts';
import { REPO_ROOT } from './util/proc.ts';

/** Where built images and .debs are kept between runs. */
export const CACHE_ROOT = process.env.IMGSTREAM_BENCH_CACHE ?? '/var/cache/imgstream-bench';

/**
 * The imgstream daemon to benchmark: imgstreamd through `src/imgstreamd-plugin.ts` (images are
 * indexed with `imgstream index` after they are pushed). Another one can be plugged in with
 * `--imgstream MODULE`: a module whose export `startImgstreamDaemon` is a `StartImgstreamDaemon`
 * (bench/src/scenarios/types.ts). The prefetch scenario starts with one recording run (not measured)
 * that pushes the report and its pack to the registry; each measured run starts with an empty
 * report dir and finds them there, as a fresh node does.
 */
const DEFAULT_IMGSTREAM: StartImgstreamDaemon | undefined = startImgstreamDaemon;

async function loadImgstream(modulePath: string | null): Promise<StartImgstreamDaemon | undefined> {
  if (modulePath === null) return DEFAULT_IMGSTREAM;
  const mod = (await import(pathToFileURL(resolve(process.env.INIT_CWD ?? process.cwd(), modulePath)).href)) as { startImgstreamDaemon?: unknown };
  if (typeof mod.startImgstreamDaemon !== 'function') throw new Error(`${modulePath} does not export a function startImgstreamDaemon`);
  return mod.startImgstreamDaemon as StartImgstreamDaemon;
}

interface Options {
  quick: boolean;
  images: string[];
  profiles: string[];
  runs: number;
  /** Scenarios to run (default all); the others are reported as not run. */
  scenarios: ScenarioId[];
  report: boolean;
  imgstreamModule: string | null;
}

function parseOptions(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const o: Options = {
    quick,
    images: quick ? ['python-scipy'] : IMAGES.map((i) => i.name),
    profiles: quick ? ['cross-region'] : ['local', 'same-zone', 'cross-region'],
    runs: quick ? 1 : 5,
    scenarios: [...SCENARIOS],
    report: true,
    imgstreamModule: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--quick') continue;
    if (a === '--no-report') o.report = false;
    else if (a === '--images' && v !== undefined) {
      o.images = v.split(',');
      i++;
    } else if (a === '--profiles' && v !== undefined) {
      o.profiles = v.split(',');
      i++;
    } else if (a === '--scenarios' && v !== undefined) {
      o.scenarios = v.split(',').map((x) => {
        if (!(SCENARIOS as readonly string[]).includes(x)) throw new Error(`unknown scenario ${x} (one of ${SCENARIOS.join(', ')})`);
        return x as ScenarioId;
      });
      i++;
    } else if (a === '--imgstream' && v !== undefined) {
      o.imgstreamModule = v;
      i++;
    } else if (a === '--runs' && v !== undefined) {
      o.runs = Number(v);
      i++;
    }
    else throw new Error(`unknown argument ${a}`);
  }
  if (!(o.runs >= 1)) throw new Error('--runs must be >= 1');
  return o;
}

const log = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

async function main(): Promise<void> {
  const reportOnly = process.argv.indexOf('--report-only');
  if (reportOnly >= 0) {
    // re-render the report from saved results (after changing report.ts), without running anything
    const file = process.argv[reportOnly + 1] ?? join(REPO_ROOT, 'bench', 'results', 'time-to-ready.json');
    const written = await writeReport(JSON.parse(await readFile(file, 'utf8')) as BenchResults, REPO_ROOT);
    log(`report: ${written.join(', ')}`);
    return;
  }
  const options = parseOptions(process.argv.slice(2));
  const imgstream = await loadImgstream(options.imgstreamModule);
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (namespaces, tc, mounts, containerd)');
  const stale = await leftovers();
  if (stale.length > 0) log(`note: namespaces from an earlier run still exist: ${stale.join(', ')}`);

  const cleanup = new Cleanup();
  const removeHandlers = cleanupOnSignals(cleanup);
  const started = new Date();
  try {
    const stateRoot = await mkdtemp(join(tmpdir(), 'imgstream-bench-state-'));
    cleanup.after(() => rm(stateRoot, { recursive: true, force: true }));

    const images: BuiltImage[] = [];
    for (const name of options.images) images.push(await buildImage(imageByName(name), CACHE_ROOT, log));

    const workingSets: BenchResults['workingSets'] = {};
    for (const image of images) {
      log(`working set of ${image.name} (strace + fincore on a plain overlay)`);
      const ws = await measureWorkingSet(image, cleanup);
      workingSets[image.name] = ws;
      log(`  ${ws.files} files, ${(ws.residentBytes / 1e6).toFixed(1)} MB resident, ${(ws.readBytes / 1e6).toFixed(1)} MB read(), cold local start ${ws.coldLocalMs.toFixed(0)} ms`);
    }

    const profiles: ProfileResults[] = [];
    for (const profileName of options.profiles) {
      const profile = profileByName(profileName);
      log(`network ${describeProfile(profile)}`);
      const pc = cleanup.scope();
      try {
        const net = await EmulatedNetwork.create(pc, profile);
        await startProbeServer(pc, net);
        const regDir = join(stateRoot, `registry-${profile.name}`);
        const [registryPort, probePort, storagePort] = await net.startProxy([REGISTRY_PORT, PROBE_PORT, STORAGE_PORT]);
        pc.after(() => rm(regDir, { recursive: true, force: true }));
        await startBenchRegistry(pc, net, regDir, storagePort!);
        const measured = await measureProfile(net, probePort!.port);
        log(`  verified: ${formatMeasurement(measured)}`);
        for (const image of images) await pushImage(net, image);
        if (imgstream !== undefined) for (const image of images) await indexImageForImgstream(net, image);
        const results: ProfileResults = { profile, measured, qdisc: await net.qdisc(), images: {} };
        for (const image of images) {
          const perScenario: Partial<Record<ScenarioId, ScenarioResults>> = {};
          const ctx = { net, registryHost: registryPort!.hostPort, image, stateRoot, imgstream, runTimeoutMs: 900_000, cleanup: pc };
          const active: ScenarioId[] = [];
          for (const scenario of SCENARIOS) {
            if (scenario !== 'full-pull' && scenario !== 'full-pull-read-all' && imgstream === undefined) {
              perScenario[scenario] = { status: 'not available', reason: 'imgstreamd does not exist yet', runs: [] };
            } else if (!options.scenarios.includes(scenario)) {
              perScenario[scenario] = { status: 'not available', reason: 'not run (--scenarios)', runs: [] };
            } else {
              perScenario[scenario] = { status: 'ok', runs: [] };
              active.push(scenario);
            }
          }
          // Runs are interleaved (a, d, a, d, ...) so that drifting background load hits every scenario alike.
          for (let i = 1; i <= options.runs; i++) {
            for (const scenario of active) {
              const sr = perScenario[scenario]!;
              if (sr.status !== 'ok') continue;
              try {
                if (scenario === 'imgstream-cached' && i === 1) {
                  log(`  ${image.name} ${SCENARIO_LABELS[scenario]}: warm-up run to fill the layer cache`);
                  await runScenario(ctx, scenario, 0);
                }
                if (scenario === 'imgstream-prefetch' && i === 1) {
                  log(`  ${image.name} ${SCENARIO_LABELS[scenario]}: recording run (no report yet: the daemon records the start-up working set)`);
                  await runScenario(ctx, scenario, 0);
                }
                const r = await runScenario(ctx, scenario, i);
                sr.runs.push(r);
                log(`  ${image.name} ${SCENARIO_LABELS[scenario]} #${i}: pull ${(r.pullMs / 1000).toFixed(2)} s, ready ${(r.readyMs / 1000).toFixed(2)} s, ${(r.registryBytes / 1e6).toFixed(1)} MB from registry  [${r.output.split('\n')[0]}]`);
              } catch (err) {
                sr.status = 'failed';
                sr.reason = err instanceof Error ? err.message.slice(0, 2000) : String(err);
                log(`  ${image.name} ${SCENARIO_LABELS[scenario]} #${i} FAILED: ${sr.reason}`);
              }
            }
          }
          results.images[image.name] = perScenario;
        }
        profiles.push(results);
      } finally {
        await pc.run();
      }
    }

    const results: BenchResults = {
      started: started.toISOString(),
      finished: new Date().toISOString(),
      command: `npm run bench -w bench -- ${process.argv.slice(2).join(' ')}`.trim(),
      options: { quick: options.quick, runs: options.runs, images: options.images, profiles: options.profiles, scenarios: options.scenarios },
      environment: await collectEnvironment(),
      images,
      workingSets,
      profiles,
    };
    const outDir = join(REPO_ROOT, 'bench', 'results');
    await mkdir(outDir, { recursive: true });
    const outFile = join(outDir, `time-to-ready${options.quick ? '-quick' : ''}.json`);
    await writeFile(outFile, `${JSON.stringify(results, null, 2)}\n`);
    log(`results: ${outFile}`);
    if (options.report) {
      const written = await writeReport(results, REPO_ROOT);
      log(`report: ${written.join(', ')}`);
    }
  } finally {
    await cleanup.run();
    removeHandlers();
    const left = await leftovers();
    if (left.length > 0) console.error(`WARNING: namespaces left behind: ${left.join(', ')}`);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exitCode = 1;
});
