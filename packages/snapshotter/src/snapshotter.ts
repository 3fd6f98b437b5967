import { existsSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { EventEmitter } from 'eventemitter3';
import { abortable, channel, defaults, ErrorCode, ImgstreamError, invalidOption, fsyncDir, publish } from '@imgstream/core';
import { diskUsage } from './fs/disk-usage.js';
import { overlayMounts } from './fs/overlay-mounts.js';
import { parseLayerLabels, SnapshotLabel } from './labels.js';
import type { RemoteSnapshotDecider, RemoteSnapshotDecision } from './remote/remote-snapshot-decider.js';
import type { SnapshotInfo, SnapshotMount, SnapshotUsage } from './snapshot-info.js';
import { SnapshotStore, type SnapshotRecord } from './store/snapshot-store.js';

/** Options of {@link Snapshotter}. */
export interface SnapshotterOptions {
  /**
   * Directory for the metadata file (`metadata.json`) and the snapshot directories
   * (`snapshots/<id>/fs`, `snapshots/<id>/work`). Must be absolute, on a filesystem that can hold
   * an overlayfs upper dir (not overlayfs itself, not tmpfs without xattrs for whiteouts).
   * Default: `defaults.snapshotter.rootDir` (`/var/lib/imgstream/snapshotter`).
   */
  rootDir?: string;
  /**
   * Decides on Prepare whether a layer becomes a remote snapshot (see
   * {@link RemoteSnapshotDecider}). Default: none, every layer is unpacked by containerd.
   */
  remoteSnapshotDecider?: RemoteSnapshotDecider;
  /**
   * Add `index=off` to overlay mounts, as containerd does when the kernel knows the option.
   * Default: true when `/sys/module/overlay/parameters/index` exists.
   */
  overlayIndexOff?: boolean;
  /** Milliseconds since the epoch, for timestamps. Default: `Date.now`. */
  clock?: () => number;
}

/** What a {@link Snapshotter} emits. */
export interface SnapshotterEvents {
  /** An active or view snapshot was created. */
  created: [info: SnapshotInfo];
  /** An active snapshot was committed, or a remote snapshot was committed on Prepare. */
  committed: [info: SnapshotInfo, remote: boolean];
  /** A snapshot was removed. */
  removed: [name: string];
  /** The remote snapshot decider answered for a layer (or failed: then `remote` is false). */
  'remote-decision': [event: { key: string; targetRef: string; layerDigest?: string; remote: boolean; reason?: string }];
  /** Cleanup removed these directories. */
  cleaned: [dirs: string[]];
}

/** Options of calls that may wait. */
export interface SignalOptions {
  signal?: AbortSignal;
}

/** Options of Prepare and View. */
export interface CreateSnapshotOptions extends SignalOptions {
  labels?: Readonly<Record<string, string>>;
}

const diag = {
  created: channel('snapshotter:created'),
  committed: channel('snapshotter:committed'),
  removed: channel('snapshotter:removed'),
  remoteDecision: channel('snapshotter:remote-decision'),
};

/**
 * A snapshotter with containerd's overlayfs semantics, independent of gRPC: active / view /
 * committed snapshots in `rootDir`, overlay or bind mounts, crash-safe metadata, and the hook for
 * remote snapshots. Mutations are serialised; reads see the last durable state.
 */
export class Snapshotter extends EventEmitter<SnapshotterEvents> {
  readonly rootDir: string;
  readonly #decider: RemoteSnapshotDecider | undefined;
  readonly #overlayOptions: string[];
  readonly #clock: () => number;
  #store: SnapshotStore | undefined;
  #ready: Promise<void> | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;
  readonly #decisions = new Map<string, PendingDecision>();

  constructor(options: SnapshotterOptions = {}) {
    super();
    this.rootDir = options.rootDir ?? defaults.snapshotter.rootDir;
    if (!isAbsolute(this.rootDir)) throw invalidOption('rootDir', `must be an absolute path, got ${JSON.stringify(this.rootDir)}`);
    if (options.remoteSnapshotDecider !== undefined && typeof options.remoteSnapshotDecider.decide !== 'function') {
      throw invalidOption('remoteSnapshotDecider', 'must have a decide() method');
    }
    this.#decider = options.remoteSnapshotDecider;
    const indexOff = options.overlayIndexOff ?? existsSync('/sys/module/overlay/parameters/index');
    this.#overlayOptions = indexOff ? ['index=off'] : [];
    this.#clock = options.clock ?? Date.now;
  }

  /** Creates the directories and loads the metadata. Idempotent; every method awaits it. */
  ready(): Promise<void> {
    this.#ready ??= this.#open();
    return this.#ready;
  }

  async #open(): Promise<void> {
    await mkdir(this.#snapshotsDir(), { recursive: true, mode: 0o700 });
    const store = await SnapshotStore.open(join(this.rootDir, 'metadata.json'));
    // Directories created before a crash that the metadata never recorded keep their ids reserved
    // (Cleanup removes them), so a new snapshot never collides with one.
    for (const name of await readdir(this.#snapshotsDir())) {
      if (/^[0-9]+$/.test(name)) store.reserveIdsThrough(Number(name));
    }
    this.#store = store;
  }

  /** Waits for running operations, then refuses new ones. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#queue.catch(() => undefined);
  }

  /** Creates an active snapshot `key` on the committed `parent` ('' for none); returns its mounts. */
  async prepare(key: string, parent: string, options: CreateSnapshotOptions = {}): Promise<SnapshotMount[]> {
    const store = await this.#open_();
    const labels = options.labels ?? {};
    const layer = parseLayerLabels(labels);
    if (this.#decider !== undefined && layer !== undefined) {
      store.checkCreate(key, parent);
      const existing = store.get(layer.targetRef);
      if (existing !== undefined && existing.kind === 'committed' && existing.parent === parent) {
        throw targetExists(layer.targetRef);
      }
      // A target name taken by something else cannot become remote: unpack it as usual.
      const decision: RemoteSnapshotDecision =
        existing === undefined ? await this.#sharedDecision(key, parent, labels, layer, options.signal) : { remote: false, reason: 'target name in use' };
      if (decision.remote) {
        await this.#exclusive(async () => {
          const id = store.allocateId();
          const info = await store.createRemote(
            layer.targetRef,
            parent,
            id,
            decision.contentDir,
            { ...labels, ...decision.labels, [SnapshotLabel.REMOTE]: layer.layerDigest ?? 'true' },
            this.#clock(),
          );
          publish(diag.committed, { name: info.name, remote: true });
          this.emit('committed', info, true);
        });
        throw targetExists(layer.targetRef);
      }
    }
    return this.#create('active', key, parent, labels, options.signal);
  }

  /** Creates a read-only view `key` of the committed `parent`; returns its mounts. */
  async view(key: string, parent: string, options: CreateSnapshotOptions = {}): Promise<SnapshotMount[]> {
    return this.#create('view', key, parent, options.labels ?? {}, options.signal);
  }

  /** The mounts of an active or view snapshot. */
  async mounts(key: string, options: SignalOptions = {}): Promise<SnapshotMount[]> {
    const store = await this.#open_();
    const record = store.require(key);
    if (record.kind === 'committed') {
      throw new ImgstreamError(ErrorCode.SNAPSHOT_WRONG_KIND, `snapshot ${JSON.stringify(key)} is committed; only active and view snapshots have mounts`, {
        key,
      });
    }
    return this.#mountsOf(store, key, record, options.signal);
  }

  /** Commits the active snapshot `key` as `name`; its directory becomes the committed layer. */
  async commit(name: string, key: string, options: CreateSnapshotOptions = {}): Promise<SnapshotInfo> {
    const store = await this.#open_();
    return this.#exclusive(async () => {
      const active = store.checkCommit(name, key);
      const usage = await diskUsage(this.#upperDir(active.id), { signal: options.signal });
      const info = await store.commit(name, key, options.labels, usage, this.#clock());
      publish(diag.committed, { name, key, remote: false, sizeBytes: usage.sizeBytes });
      this.emit('committed', info, false);
      return info;
    });
  }

  /** Removes a snapshot without children and its directory. */
  async remove(key: string): Promise<void> {
    const store = await this.#open_();
    await this.#exclusive(async () => {
      const record = await store.remove(key);
      // The metadata no longer refers to the directory; if removing it fails, Cleanup retries.
      await rm(this.#snapshotDir(record.id), { recursive: true, force: true }).catch(() => undefined);
      publish(diag.removed, { name: key });
      this.emit('removed', key);
    });
  }

  /** Metadata of a snapshot by key or name. */
  async stat(key: string): Promise<SnapshotInfo> {
    return (await this.#open_()).info(key);
  }

  /**
   * Updates labels: no field paths replaces all labels, `labels` too, `labels.K` sets or deletes
   * one label. Other paths are IMGSTREAM_SNAPSHOT_INVALID_ARGUMENT.
   */
  async update(info: { name: string; labels?: Readonly<Record<string, string>> }, fieldPaths: readonly string[] = []): Promise<SnapshotInfo> {
    const store = await this.#open_();
    return this.#exclusive(() => store.update(info.name, info.labels, fieldPaths, this.#clock()));
  }

  /** Disk usage: measured now for active snapshots, recorded at commit for committed ones. */
  async usage(key: string, options: SignalOptions = {}): Promise<SnapshotUsage> {
    const store = await this.#open_();
    const record = store.require(key);
    if (record.kind === 'active') return diskUsage(this.#upperDir(record.id), { signal: options.signal });
    return record.usage ?? { sizeBytes: 0, inodes: 0 };
  }

  /** Snapshots matching any of containerd's filter strings (all when none are given). */
  async list(filters: readonly string[] = []): Promise<SnapshotInfo[]> {
    return (await this.#open_()).list(filters);
  }

  /** Removes snapshot directories the metadata does not refer to; returns what it removed. */
  async cleanup(): Promise<string[]> {
    const store = await this.#open_();
    return this.#exclusive(async () => {
      const ids = store.ids();
      const removed: string[] = [];
      for (const name of await readdir(this.#snapshotsDir())) {
        if (ids.has(name)) continue;
        const dir = join(this.#snapshotsDir(), name);
        await rm(dir, { recursive: true, force: true });
        removed.push(dir);
      }
      if (removed.length > 0) this.emit('cleaned', removed);
      return removed;
    });
  }

  async #create(kind: 'active' | 'view', key: string, parent: string, labels: Readonly<Record<string, string>>, signal?: AbortSignal): Promise<SnapshotMount[]> {
    const store = await this.#open_();
    signal?.throwIfAborted();
    // a remote parent's files may have moved (downloaded, or re-attached after a restart)
    const parentRecord = parent !== '' ? store.get(parent) : undefined;
    const parentDir = parentRecord !== undefined ? await this.#lowerDir(parent, parentRecord, signal) : undefined;
    return this.#exclusive(async () => {
      store.checkCreate(key, parent);
      const id = store.allocateId();
      const dir = this.#snapshotDir(id);
      // Build the directory under a temp name, rename it into place, then record it: a crash
      // leaves at most an unreferenced directory, which Cleanup removes.
      const tmp = await mkdtemp(join(this.#snapshotsDir(), 'new-'));
      let renamed = false;
      try {
        await mkdir(join(tmp, 'fs'), { mode: 0o755 });
        if (kind === 'active') await mkdir(join(tmp, 'work'), { mode: 0o711 });
        if (parent !== '') {
          const p = store.require(parent);
          const st = await stat(parentDir ?? this.#contentDir(p));
          await chown(join(tmp, 'fs'), st.uid, st.gid);
        }
        await rename(tmp, dir);
        renamed = true;
        await fsyncDir(this.#snapshotsDir());
        const info = await store.create(kind, key, parent, id, labels, this.#clock());
        publish(diag.created, { name: key, kind, parent });
        this.emit('created', info);
      } catch (err) {
        await rm(renamed ? dir : tmp, { recursive: true, force: true }).catch(() => undefined);
        throw err;
      }
      return store.require(key);
    }).then((record) => this.#mountsOf(store, key, record, signal));
  }

  /**
   * One decision per (parent, chain ID) at a time: concurrent Prepares of the same layer (parallel
   * pulls of images sharing it) wait for the same decider call, which is aborted only when every
   * waiter has given up.
   */
  async #sharedDecision(
    key: string,
    parent: string,
    labels: Readonly<Record<string, string>>,
    layer: NonNullable<ReturnType<typeof parseLayerLabels>>,
    signal: AbortSignal | undefined,
  ): Promise<RemoteSnapshotDecision> {
    signal?.throwIfAborted();
    const id = `${parent}\n${layer.targetRef}`;
    let entry = this.#decisions.get(id);
    if (entry === undefined) {
      const controller = new AbortController();
      const created: PendingDecision = {
        controller,
        waiters: 0,
        promise: this.#decide(key, parent, labels, layer, controller.signal).finally(() => {
          if (this.#decisions.get(id) === created) this.#decisions.delete(id);
        }),
      };
      entry = created;
      this.#decisions.set(id, entry);
    }
    const shared = entry;
    shared.waiters++;
    try {
      return await abortable(shared.promise, signal);
    } finally {
      shared.waiters--;
      if (shared.waiters === 0 && signal?.aborted) {
        if (this.#decisions.get(id) === shared) this.#decisions.delete(id);
        shared.controller.abort(signal.reason);
      }
    }
  }

  async #decide(
    key: string,
    parent: string,
    labels: Readonly<Record<string, string>>,
    layer: NonNullable<ReturnType<typeof parseLayerLabels>>,
    signal: AbortSignal | undefined,
  ): Promise<RemoteSnapshotDecision> {
    let decision: RemoteSnapshotDecision;
    try {
      decision = await this.#decider!.decide({ key, parent, labels, layer }, { signal });
      if (decision.remote && !isAbsolute(decision.contentDir)) {
        decision = { remote: false, reason: `decider returned a relative contentDir ${JSON.stringify(decision.contentDir)}` };
      }
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      decision = { remote: false, reason: `decider failed: ${(err as Error).message ?? String(err)}` };
    }
    const event = {
      key,
      targetRef: layer.targetRef,
      ...(layer.layerDigest !== undefined ? { layerDigest: layer.layerDigest } : {}),
      remote: decision.remote,
      ...(decision.remote ? {} : { reason: decision.reason }),
    };
    publish(diag.remoteDecision, event);
    this.emit('remote-decision', event);
    return decision;
  }

  async #mountsOf(store: SnapshotStore, key: string, record: SnapshotRecord, signal?: AbortSignal): Promise<SnapshotMount[]> {
    // the parents' dirs are asked for at once: each can be a round trip to the decider (imgstreamd's
    // FUSE server, busy with a prefetch replay while the container is created)
    const dirs = await Promise.all(store.parentChain(key).map(({ name, record: p }) => this.#lowerDir(name, p, signal)));
    // A layer that occurs twice in an image is one remote directory; overlayfs refuses a lower
    // dir given twice (ELOOP). Keeping only its topmost occurrence gives the same tree: the upper
    // copy re-applies every file, whiteout and opaque dir of the lower one.
    const lowerDirs = dirs.filter((dir, i) => dirs.indexOf(dir) === i);
    return overlayMounts({
      kind: record.kind,
      upperDir: this.#upperDir(record.id),
      workDir: join(this.#snapshotDir(record.id), 'work'),
      lowerDirs,
      overlayOptions: this.#overlayOptions,
    });
  }

  /** A parent's files: a remote layer's current directory (asked of the decider), else its own dir. */
  async #lowerDir(name: string, record: SnapshotRecord, signal: AbortSignal | undefined): Promise<string> {
    const recorded = this.#contentDir(record);
    if (record.contentDir === undefined || this.#decider?.lowerDir === undefined) return recorded;
    const dir = await this.#decider.lowerDir({ name, contentDir: record.contentDir, labels: record.labels }, { signal });
    if (!isAbsolute(dir)) throw new ImgstreamError(ErrorCode.SNAPSHOT_INVALID_ARGUMENT, `decider returned a relative lower dir ${JSON.stringify(dir)}`, { key: name });
    return dir;
  }

  async #open_(): Promise<SnapshotStore> {
    if (this.#closed) throw new ImgstreamError(ErrorCode.CLOSED, 'snapshotter is closed');
    await this.ready();
    return this.#store!;
  }

  /** Runs `fn` after every earlier mutation has finished. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #snapshotsDir(): string {
    return join(this.rootDir, 'snapshots');
  }

  #snapshotDir(id: string): string {
    return join(this.#snapshotsDir(), id);
  }

  #upperDir(id: string): string {
    return join(this.#snapshotDir(id), 'fs');
  }

  /** Where a committed snapshot's files are: its own `fs` dir, or a remote layer's content dir. */
  #contentDir(record: SnapshotRecord): string {
    return record.contentDir ?? this.#upperDir(record.id);
  }
}

interface PendingDecision {
  readonly controller: AbortController;
  readonly promise: Promise<RemoteSnapshotDecision>;
  waiters: number;
}


function targetExists(targetRef: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.SNAPSHOT_ALREADY_EXISTS, `target snapshot ${JSON.stringify(targetRef)} already exists`, { key: targetRef });
}
