import type { Server } from 'node:http';
import { DockerConfigCredentials, ImagePrefetcher, ImageStreamer, PrefetchReportStore, RegistryClient, isImgstreamError, loadHostsDir, type Digest, type StreamedLayer } from '@imgstream/core';
import { ImgstreamFs, fetcherLayerContent, layerNeedsXattrs, type PageCacheWarmer } from '@imgstream/fuse';
import type { DaemonConfig } from './config.js';
import { listenControl, type LayerDir, type LayerRef, type LowerDirReply, type OpenLayerReply } from './control.js';
import { startEventReporting } from './k8s.js';
import type { Logger } from './logger.js';
import { DaemonMetrics } from './metrics.js';

/**
 * The FUSE server process: owns the ImageStreamer (fetcher, caches, downloader, GC) and the
 * ImgstreamFs mount, and answers the snapshotter on the control socket.
 */
export async function runFuseServer(config: DaemonConfig, log: Logger): Promise<{ close(): Promise<void> }> {
  const registry = new RegistryClient({
    insecureRegistries: config.plainHttpRegistries,
    plainHttpLoopback: config.plainHttpLoopback,
    ...(config.dockerConfig !== undefined ? { credentials: new DockerConfigCredentials({ path: config.dockerConfig }) } : {}),
    ...(config.hostsDir !== undefined ? { mirrors: await loadHostsDir(config.hostsDir) } : {}),
  });
  const streamer = new ImageStreamer({
    registry,
    layerCacheDir: config.layerCacheDir,
    imagesInUsePath: config.imagesInUsePath,
    maxContentCacheBytes: config.maxContentCacheBytes,
    maxReadBlocks: config.maxReadBlocks,
    readAheadBytes: config.readAheadBytes,
    layerReadAheadBytes: config.layerReadAheadBytes,
    layerReadBehindBytes: config.layerReadBehindBytes,
    maxLayerDownloads: config.maxLayerDownloads,
    gcPeriodMs: config.gcPeriodMs,
    backgroundDownloads: config.backgroundDownloads,
    downloadSilenceMs: config.downloadSilenceMs,
    downloadMaxDeferMs: config.downloadMaxDeferMs,
  });
  await streamer.ready();
  const prefetcher = config.enablePrefetching
    ? new ImagePrefetcher({
        streamer,
        store: new PrefetchReportStore({ dir: config.prefetchReportDir }),
        quietMs: config.prefetchQuietMs,
        recordMaxMs: config.prefetchRecordMaxMs,
        budgetBytes: config.prefetchBudgetBytes,
        waitMs: config.prefetchWaitMs,
        pushReports: config.prefetchPush,
        packs: config.prefetchPacks,
      })
    : undefined;
  // lookups under a layer go to the prefetcher's recordings: in vain (a report's `absent`), or found (its `looked`)
  const onAbsent = (layer: Digest, path: string): void => prefetcher?.noteAbsent(layer, path);
  const onLookup = (layer: Digest, path: string): void => prefetcher?.noteLookup(layer, path);
  const negativeTimeoutMs = config.fuseNegativeTimeoutMs;
  // Every layer is under fs (and its images/ view). Layers without xattrs or opaque dirs (most)
  // are also under plainFs, a mount without xattrs, and containers get them from there: the kernel
  // never asks it for xattrs, while overlayfs asks a lower dir for several on every lookup.
  const fs = new ImgstreamFs({ mountPoint: config.mountPoint, negativeTimeoutMs, onAbsent, onLookup });
  const plainFs = new ImgstreamFs({ mountPoint: noXattrMountPoint(config.mountPoint), fsName: 'imgstream-noxattr', xattrs: false, negativeTimeoutMs, onAbsent, onLookup });
  await fs.mount();
  try {
    await plainFs.mount();
  } catch (err) {
    await fs.close();
    throw err;
  }
  log.info({ mountPoint: config.mountPoint, noXattrMountPoint: plainFs.mountPoint, layerCacheDir: config.layerCacheDir }, 'FUSE filesystem mounted');
  const needsXattrs = new Map<Digest, boolean>();
  /** The mounts that show a layer: fs, and plainFs when the layer needs no xattrs. */
  const mountsOf = (layer: StreamedLayer): ImgstreamFs[] => {
    let x = needsXattrs.get(layer.digest);
    if (x === undefined) needsXattrs.set(layer.digest, (x = layerNeedsXattrs(layer.index)));
    return x ? [fs] : [fs, plainFs];
  };
  /** The mount containers read a shown layer from (the last of mountsOf). */
  const servingMount = (digest: Digest): ImgstreamFs => (needsXattrs.get(digest) === false ? plainFs : fs);
  const setLocalDir = (digest: Digest, dir: string): void => {
    for (const m of [fs, plainFs]) if (m.mounted && m.listLayers().includes(digest)) m.setLayerLocalDir(digest, dir);
  };
  prefetcher?.on('report', (e) => {
    if (e.status === 'stale') log.warn({ image: e.imageRef, manifest: e.manifestDigest, reason: e.reason }, 'prefetch report ignored (corrupt or stale); recording a new one');
    else log.info({ image: e.imageRef, manifest: e.manifestDigest, status: e.status, source: e.source }, e.status === 'found' ? 'prefetch report found: fetching the start-up working set first' : 'no prefetch report: recording this start');
  });
  prefetcher?.on('replayed', (e) => {
    const pack = 'pack' in e.result ? { packBytes: e.result.pack.packBytes, packRanges: e.result.pack.ranges } : {};
    log.info({ image: e.imageRef, blocks: e.result.blocks, bytes: e.result.bytes, ...pack, skippedBlocks: e.result.skippedBlocks, failedBatches: e.result.failedBatches, durationMs: Math.round(e.result.durationMs) }, 'prefetch done');
  });
  // page-cache warm-up: the file ranges of the report, read through the mount as their blocks land
  const warmers = new Map<Digest, Map<ImgstreamFs, PageCacheWarmer>>();
  if (config.prefetchPageCache) {
    /** The warm-up of an image through the mount that serves the layer to containers (its page cache is the one that helps). */
    const warmerFor = (manifestDigest: Digest, layerDigest: Digest): PageCacheWarmer | undefined => {
      if (!fs.mounted) return undefined;
      // the replay runs from the image's first Prepare: its other layers may not be attached yet
      const layer = streamer.layer(layerDigest);
      if (layer !== undefined) showLayer(layer);
      const mount = servingMount(layerDigest);
      const perMount = warmers.get(manifestDigest) ?? new Map<ImgstreamFs, PageCacheWarmer>();
      warmers.set(manifestDigest, perMount);
      let warmer = perMount.get(mount);
      if (warmer === undefined) {
        try {
          warmer = mount.warmPageCache({ readers: config.prefetchPageCacheReaders });
        } catch {
          return undefined; // closing
        }
        perMount.set(mount, warmer);
      }
      return warmer;
    };
    const maxFile = config.prefetchPageCacheMaxFileBytes;
    const warmed = (layerDigest: Digest, path: string): boolean => maxFile === 0 || (streamer.layer(layerDigest)?.index.entries.get(path)?.size ?? 0) <= maxFile;
    prefetcher?.on('files-loaded', (e) => {
      const pieces = e.pieces.filter((p) => warmed(e.layerDigest, p.path));
      if (pieces.length > 0) warmerFor(e.manifestDigest, e.layerDigest)?.add(e.layerDigest, pieces);
    });
    // the start-up's lookups in vain, looked up ahead of the container: the kernel caches the misses
    if (negativeTimeoutMs > 0) prefetcher?.on('absent-paths', (e) => warmerFor(e.manifestDigest, e.layerDigest)?.lookUp(e.layerDigest, e.paths));
    // and those it found without reading them (the kernel keeps their entries: layers do not change)
    prefetcher?.on('looked-paths', (e) => warmerFor(e.manifestDigest, e.layerDigest)?.lookUp(e.layerDigest, e.paths));
    prefetcher?.on('replayed', (e) => {
      const perMount = warmers.get(e.manifestDigest);
      if (perMount === undefined) return;
      warmers.delete(e.manifestDigest);
      void Promise.all([...perMount.values()].map((w) => w.end())).then((all) =>
        log.info(
          {
            image: e.imageRef,
            files: all.reduce((n, w) => n + w.files, 0),
            bytes: all.reduce((n, w) => n + w.bytes, 0),
            lookups: all.reduce((n, w) => n + w.lookups, 0),
            errors: all.reduce((n, w) => n + w.errors, 0),
            durationMs: Math.round(Math.max(...all.map((w) => w.durationMs))),
          },
          'page cache warmed with the prefetched files',
        ),
      );
    });
  }
  prefetcher?.on('replay-stats', (e) => log.info({ image: e.imageRef, hits: e.hits, misses: e.misses }, 'prefetch hits and misses of the start-up window'));
  prefetcher?.on('recorded', (e) => log.info({ image: e.imageRef, manifest: e.manifestDigest, ranges: e.ranges, blocks: e.blocks, path: e.path }, 'prefetch report recorded'));
  prefetcher?.on('pushed', (e) => log.info({ image: e.imageRef, manifest: e.manifestDigest, artifact: e.artifactDigest }, 'prefetch report pushed to the registry'));
  prefetcher?.on('error', (err) => log.warn({ err: String(err) }, 'prefetch error (starts are not affected)'));

  streamer.on('layer-streamed', (e) => log.info({ image: e.imageRef, layer: e.layerDigest, format: e.format, files: e.files }, 'layer is streamed'));
  streamer.on('layer-fallback', (e) => log.warn({ image: e.imageRef, layer: e.layerDigest, code: e.code, reason: e.reason }, 'layer is not streamed: containerd pulls it in full'));
  streamer.on('layer-complete', (e) => {
    log.info({ layer: e.layerDigest, dir: e.dir, bytes: e.bytes, durationMs: Math.round(e.durationMs) }, 'layer downloaded: new containers use the local copy');
    // a layer an image's prefetch recording reads stays on the fetcher until the recording ends
    const recorded = prefetcher?.whenRecorded(e.layerDigest);
    if (recorded === undefined) setLocalDir(e.layerDigest, e.dir);
    else void recorded.then(() => setLocalDir(e.layerDigest, e.dir));
  });
  const downloading = new Set<string>();
  streamer.on('download-bytes', (e) => {
    if (downloading.has(e.layerDigest)) return;
    downloading.add(e.layerDigest);
    log.info({ layer: e.layerDigest }, 'layer download started');
  });
  streamer.on('download-failed', (e) => log.warn({ layer: e.layerDigest, err: String((e.error as Error)?.message ?? e.error) }, 'background download failed; reads keep streaming'));
  streamer.on('gc', (r) => r.removed.length > 0 && log.info({ removed: r.removed }, 'garbage collection removed layers'));
  streamer.on('error', (err) => log.error({ err: String(err) }, 'engine error'));

  const metrics = new DaemonMetrics(streamer, prefetcher);
  let metricsServer: Server | undefined;
  if (config.metricsAddress !== '') {
    metricsServer = await metrics.listen(config.metricsAddress);
    log.info({ address: config.metricsAddress }, 'metrics on /metrics');
  }
  const reporting = await startEventReporting(config, streamer, log);

  /** Puts a layer under the mount's layers/ if it is not there, pointing at its local copy once complete. */
  const showLayer = (layer: StreamedLayer): void => {
    const { localDir } = streamer.layerState(layer.digest);
    for (const m of mountsOf(layer)) {
      if (!m.listLayers().includes(layer.digest)) m.addLayer(layer.digest, fetcherLayerContent(streamer.fetcher, layer));
      if (localDir !== undefined) m.setLayerLocalDir(layer.digest, localDir);
    }
  };
  /**
   * The image's other layers that are open (the prefetcher opens every streamable layer of an
   * image on its first Prepare), shown on their mounts: the snapshotter decides their Prepares
   * from this list instead of asking again.
   */
  const shownSiblings = async (layer: StreamedLayer): Promise<LayerDir[]> => {
    const open = layer.imageLayers.flatMap((d) => {
      const sibling = d !== layer.digest ? streamer.layer(d) : undefined;
      return sibling !== undefined ? [sibling] : [];
    });
    for (const s of open) showLayer(s);
    await Promise.all([fs, plainFs].map((m) => m.visible()));
    return open.map((s) => ({ layerDigest: s.digest, dir: servingMount(s.digest).layerPath(s.digest) }));
  };
  const imagesAdded = new Set<string>();
  /** Opens and shows a layer; `siblings`: name the image's other open layers in the reply (for Prepare). */
  const attach = async (req: LayerRef, siblings = false): Promise<OpenLayerReply> => {
    try {
      const layer = await streamer.openLayer(req);
      const digest = layer.digest;
      showLayer(layer);
      // a cached miss of the layer's directory (looked up before it was shown) is dropped first
      await Promise.all(mountsOf(layer).map((m) => m.visible()));
      if (!imagesAdded.has(layer.imageKey)) {
        imagesAdded.add(layer.imageKey);
        log.info({ image: req.imageRef, manifest: layer.manifestDigest, layers: layer.imageLayers.length }, 'image is backed by image streaming');
        fs.addImage(req.imageRef, layer.manifestDigest, layer.imageLayers);
        if (prefetcher !== undefined) {
          // Prepare waits for the first prefetch batch, never longer than --prefetch_wait
          let timer: NodeJS.Timeout | undefined;
          const started = prefetcher.startImage(req.imageRef, layer.manifestDigest).catch((err: unknown) => {
            log.warn({ image: req.imageRef, err: String(err) }, 'prefetch could not start (the container starts without it)');
          });
          await Promise.race([started, new Promise<void>((resolve) => (timer = setTimeout(resolve, config.prefetchWaitMs)))]);
          clearTimeout(timer);
        }
      }
      const reply = { remote: true as const, dir: servingMount(digest).layerPath(digest), imageKey: layer.imageKey, manifestDigest: layer.manifestDigest, format: layer.format };
      return siblings ? { ...reply, siblings: await shownSiblings(layer) } : reply;
    } catch (err) {
      if (!isImgstreamError(err)) throw err;
      return { remote: false, code: err.code, reason: err.message };
    }
  };
  const control = await listenControl(config.controlSocket, {
    openLayer: (req) => attach(req, true),
    async lowerDir(req: LayerRef): Promise<LowerDirReply> {
      const state = streamer.layerState(req.layerDigest as Digest);
      if (state.localDir !== undefined) return { dir: state.localDir, local: true };
      const opened = await attach(req);
      if (!opened.remote) throw Object.assign(new Error(`layer ${req.layerDigest} cannot be streamed any more: ${opened.reason}`), { code: opened.code });
      // a container of the image is being created: its start-up's lookups in vain are looked up now
      prefetcher?.containerStarting(opened.manifestDigest as Digest);
      return { dir: opened.dir, local: false };
    },
    async releaseImage({ imageKey }) {
      const released = await streamer.releaseImage(imageKey);
      log.info({ image: imageKey, released }, 'image released');
      return { released };
    },
  });
  log.info({ socket: config.controlSocket }, 'control socket listening');

  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => control.close(() => resolve()));
        control.closeAllConnections();
        await stopped;
        if (metricsServer !== undefined) await new Promise<void>((resolve) => metricsServer.close(() => resolve()));
        await reporting.close();
        for (const m of [plainFs, fs]) await m.close().catch((err: unknown) => log.error({ mountPoint: m.mountPoint, err: String(err) }, 'unmount failed'));
        await prefetcher?.close();
        await streamer.close();
        await registry.close();
        log.info('FUSE server stopped');
      })();
      return closing;
    },
  };
}

/** Where the mount without xattrs goes: beside the main one, `<mount point>-noxattr`. */
function noXattrMountPoint(mountPoint: string): string {
  return `${mountPoint.replace(/\/+$/, '')}-noxattr`;
}
