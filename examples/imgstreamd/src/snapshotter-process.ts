import { parseLayerLabels, SnapshotLabel, SnapshotterServer, type RemoteSnapshotDecider, type RemoteSnapshotInfo } from '@imgstream/snapshotter';
import type { DaemonConfig } from './config.js';
import { ControlClient, type LayerRef, type OpenLayerReply } from './control.js';
import type { Logger } from './logger.js';

/** Label imgstream puts on remote snapshots: the images-in-use key of the image it came from. */
export const IMAGE_KEY_LABEL = 'containerd.io/snapshot/imgstream.image';

function layerRefOf(labels: Readonly<Record<string, string>>): LayerRef | undefined {
  const layer = parseLayerLabels(labels);
  if (layer?.imageRef === undefined || layer.layerDigest === undefined) return undefined;
  return { imageRef: layer.imageRef, layerDigest: layer.layerDigest, ...(layer.manifestDigest !== undefined ? { manifestDigest: layer.manifestDigest } : {}) };
}

/** Options of {@link controlDecider}. */
export interface ControlDeciderOptions {
  /**
   * How long a layer named in an earlier reply's `siblings` is decided from that reply (once),
   * without asking the FUSE server. Default 60 s; 0 asks for every layer.
   */
  knownForMs?: number;
  /** Called when a Prepare was decided from an earlier reply. */
  onKnown?: (ref: LayerRef) => void;
}

/**
 * The remote snapshot decider of imgstreamd: asks the FUSE server over the control socket. A
 * reply names the image's other open layers (`siblings`); the Prepares of those that follow are
 * decided from it, once each and within `knownForMs`: the directory it recorded is asked for
 * again at Mounts (`lowerDir`), which re-attaches the layer if the FUSE server lost it meanwhile.
 */
export function controlDecider(control: ControlClient, options: ControlDeciderOptions = {}): RemoteSnapshotDecider {
  const knownForMs = options.knownForMs ?? 60_000;
  /** `imageRef\nlayerDigest` -> the decision, the image's manifest, and until when it holds */
  const known = new Map<string, { dir: string; imageKey: string; manifestDigest: string; untilMs: number }>();
  const remember = (ref: LayerRef, reply: OpenLayerReply & { remote: true }): void => {
    const now = Date.now();
    for (const [k, v] of known) if (v.untilMs <= now) known.delete(k);
    if (knownForMs <= 0) return;
    for (const s of reply.siblings ?? []) {
      known.set(`${ref.imageRef}\n${s.layerDigest}`, { dir: s.dir, imageKey: reply.imageKey, manifestDigest: reply.manifestDigest, untilMs: now + knownForMs });
    }
  };
  const recall = (ref: LayerRef): { dir: string; imageKey: string } | undefined => {
    const key = `${ref.imageRef}\n${ref.layerDigest}`;
    const k = known.get(key);
    if (k === undefined) return undefined;
    known.delete(key);
    if (k.untilMs <= Date.now() || (ref.manifestDigest !== undefined && ref.manifestDigest !== k.manifestDigest)) return undefined;
    options.onKnown?.(ref);
    return k;
  };
  return {
    async decide(req, { signal }) {
      const ref = layerRefOf(req.labels);
      if (ref === undefined) return { remote: false, reason: 'no image labels on Prepare (pull through CRI or `ctr-remote images rpull`)' };
      const k = recall(ref);
      if (k !== undefined) return { remote: true, contentDir: k.dir, labels: { [IMAGE_KEY_LABEL]: k.imageKey } };
      const reply = await control.openLayer(ref, signal !== undefined ? { signal } : {});
      if (!reply.remote) return { remote: false, reason: `${reply.code}: ${reply.reason}` };
      remember(ref, reply);
      return { remote: true, contentDir: reply.dir, labels: { [IMAGE_KEY_LABEL]: reply.imageKey } };
    },
    async lowerDir(snapshot: RemoteSnapshotInfo, { signal }) {
      const ref = layerRefOf(snapshot.labels);
      if (ref === undefined) return snapshot.contentDir;
      return (await control.lowerDir(ref, signal !== undefined ? { signal } : {})).dir;
    },
  };
}

/**
 * The snapshotter process: containerd's proxy snapshotter on `--socket`. Remote decisions and
 * lower dirs come from the FUSE server; metadata is on disk, so a restart re-attaches the remote
 * snapshots it committed without touching running containers' mounts.
 */
export async function runSnapshotter(config: DaemonConfig, log: Logger): Promise<{ close(): Promise<void> }> {
  const control = new ControlClient(config.controlSocket);
  // layers decided from an earlier reply of the FUSE server (no round trip), for the log
  const decidedFromImage = new Set<string>();
  const decider = controlDecider(control, { onKnown: (ref) => decidedFromImage.add(ref.layerDigest) });
  const server = new SnapshotterServer({ rootDir: config.snapshotterRoot, remoteSnapshotDecider: decider });
  const snapshotter = server.snapshotter;
  await snapshotter.ready();

  // image key of every remote snapshot, to release an image when its last remote snapshot goes
  const imageOf = new Map<string, string>();
  const remotes = await snapshotter.list([`labels."${SnapshotLabel.REMOTE}"`]);
  for (const info of remotes) {
    const key = info.labels[IMAGE_KEY_LABEL];
    if (key !== undefined) imageOf.set(info.name, key);
  }
  snapshotter.on('remote-decision', (e) => {
    const fromImage = e.layerDigest !== undefined && decidedFromImage.delete(e.layerDigest);
    if (e.remote) log.info({ snapshot: e.targetRef, layer: e.layerDigest, ...(fromImage ? { fromImage } : {}) }, 'remote snapshot: layer is streamed, containerd skips it');
    else log.info({ snapshot: e.targetRef, layer: e.layerDigest, reason: e.reason }, 'layer not streamed: containerd unpacks it');
  });
  snapshotter.on('committed', (info, remote) => {
    const key = info.labels[IMAGE_KEY_LABEL];
    if (remote && key !== undefined) imageOf.set(info.name, key);
  });
  snapshotter.on('removed', (name) => {
    const key = imageOf.get(name);
    if (key === undefined) return;
    imageOf.delete(name);
    if ([...imageOf.values()].includes(key)) return;
    control.releaseImage({ imageKey: key }).catch((err: unknown) => log.warn({ image: key, err: String(err) }, 'could not release image'));
  });
  server.on('request', (e) => {
    if (e.error !== undefined && e.error !== 'IMGSTREAM_SNAPSHOT_ALREADY_EXISTS' && e.error !== 'IMGSTREAM_SNAPSHOT_NOT_FOUND') {
      log.warn({ method: e.method, key: e.key, error: e.error, durationMs: Math.round(e.durationMs) }, 'snapshot request failed');
    } else log.debug({ method: e.method, key: e.key, error: e.error, durationMs: Math.round(e.durationMs) }, 'snapshot request');
  });
  await server.listen(config.socket);
  log.info({ socket: config.socket, root: config.snapshotterRoot, remoteSnapshots: remotes.length }, 'snapshotter listening');

  // Re-attach: make sure the FUSE server serves every remote layer committed before (it may have
  // restarted too). In the background: containerd's calls re-attach on demand anyway.
  void (async () => {
    for (const info of remotes) {
      const ref = layerRefOf(info.labels);
      if (ref === undefined) continue;
      try {
        const { dir, local } = await control.lowerDir(ref);
        log.info({ snapshot: info.name, layer: ref.layerDigest, dir, local }, 're-attached remote snapshot');
      } catch (err) {
        log.warn({ snapshot: info.name, layer: ref.layerDigest, err: String(err) }, 'could not re-attach remote snapshot yet');
      }
    }
  })();

  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        await server.close();
        await snapshotter.close();
        log.info('snapshotter stopped');
      })();
      return closing;
    },
  };
}
