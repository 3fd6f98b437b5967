import { ErrorCode, ImgstreamError, writeFileAtomic } from '@imgstream/core';
import type { SnapshotInfo, SnapshotKind, SnapshotUsage } from '../snapshot-info.js';
import { parseFilters } from './filters.js';
import { readFileIfExists } from './atomic-file.js';

/** What the store keeps about one snapshot; `id` names its directory. */
export interface SnapshotRecord {
  readonly id: string;
  readonly kind: SnapshotKind;
  readonly parent: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
  /** Recorded at commit time for committed snapshots. */
  readonly usage?: SnapshotUsage;
  /**
   * For remote snapshots only: the directory that holds this layer's files (a FUSE view or a local
   * layer cache directory) instead of the snapshot's own `fs` directory.
   */
  readonly contentDir?: string;
}

interface MetadataFileV1 {
  version: 1;
  nextId: number;
  snapshots: Record<string, SnapshotRecord>;
}

/** Longest label key + value containerd accepts, in bytes. */
const MAX_LABEL_BYTES = 4096;

function notFound(key: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.SNAPSHOT_NOT_FOUND, `snapshot ${JSON.stringify(key)} does not exist`, { key });
}

function invalidArgument(message: string, fields: Record<string, unknown> = {}): ImgstreamError {
  return new ImgstreamError(ErrorCode.SNAPSHOT_INVALID_ARGUMENT, message, fields);
}

/** Checks label sizes the way containerd does; returns a fresh copy without empty values (containerd drops them). */
export function validateLabels(labels: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels ?? {})) {
    if (k === '') throw invalidArgument('label key must not be empty');
    if (Buffer.byteLength(k) + Buffer.byteLength(v) > MAX_LABEL_BYTES) {
      throw invalidArgument(`label ${JSON.stringify(k)}: key and value exceed ${MAX_LABEL_BYTES} bytes`, { label: k });
    }
    if (v !== '') out[k] = v;
  }
  return out;
}

/**
 * The snapshot metadata: kinds, keys and names, parent chains, labels and recorded usage, with
 * containerd's rules (what may be committed, removed, updated). It knows nothing about directories
 * or mounts beyond the id of each snapshot. Every change is written to one JSON file atomically
 * before it becomes visible; a failed write leaves the previous state in place.
 *
 * Mutations must not run concurrently; the {@link Snapshotter} serialises them.
 */
export class SnapshotStore {
  #state: MetadataFileV1;

  private constructor(
    readonly path: string,
    state: MetadataFileV1,
  ) {
    this.#state = state;
  }

  /** Loads the metadata file at `path`, or starts empty when there is none. */
  static async open(path: string): Promise<SnapshotStore> {
    const text = await readFileIfExists(path);
    if (text === undefined) return new SnapshotStore(path, { version: 1, nextId: 1, snapshots: {} });
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new ImgstreamError(ErrorCode.SNAPSHOT_METADATA_CORRUPT, `snapshot metadata ${path} is not JSON`, { path, cause: err });
    }
    return new SnapshotStore(path, checkState(parsed, path));
  }

  /** The record for a key or name, if any. */
  get(key: string): SnapshotRecord | undefined {
    return Object.hasOwn(this.#state.snapshots, key) ? this.#state.snapshots[key] : undefined;
  }

  /** The record for a key or name; IMGSTREAM_SNAPSHOT_NOT_FOUND when there is none. */
  require(key: string): SnapshotRecord {
    const r = this.get(key);
    if (r === undefined) throw notFound(key);
    return r;
  }

  /** Every id the metadata refers to. */
  ids(): Set<string> {
    return new Set(Object.values(this.#state.snapshots).map((r) => r.id));
  }

  /** The committed ancestors of a snapshot, nearest first. */
  parentChain(key: string): Array<{ name: string; record: SnapshotRecord }> {
    const chain: Array<{ name: string; record: SnapshotRecord }> = [];
    let parent = this.require(key).parent;
    while (parent !== '') {
      const record = this.get(parent);
      if (record === undefined) {
        throw new ImgstreamError(ErrorCode.SNAPSHOT_METADATA_CORRUPT, `parent ${JSON.stringify(parent)} of ${JSON.stringify(key)} is missing`, {
          key,
        });
      }
      chain.push({ name: parent, record });
      parent = record.parent;
    }
    return chain;
  }

  /** containerd's Info for a record. */
  info(name: string): SnapshotInfo {
    const r = this.require(name);
    return toInfo(name, r);
  }

  /** Infos matching any of the containerd filter strings (all when there are none). */
  list(filters: readonly string[] = []): SnapshotInfo[] {
    const match = parseFilters(filters);
    const out: SnapshotInfo[] = [];
    for (const [name, r] of Object.entries(this.#state.snapshots)) {
      const info = toInfo(name, r);
      if (match((path) => lookupField(info, path))) out.push(info);
    }
    return out;
  }

  /** Reserves the id for a snapshot directory about to be created. */
  allocateId(): string {
    return String(this.#state.nextId++);
  }

  /** Makes sure ids up to `id` are never handed out again (ids found on disk after a crash). */
  reserveIdsThrough(id: number): void {
    if (id >= this.#state.nextId) this.#state.nextId = id + 1;
  }

  /** Throws the error a create with this key and parent would throw; used before making directories. */
  checkCreate(key: string, parent: string): void {
    if (key === '') throw invalidArgument('snapshot key must not be empty');
    if (this.get(key) !== undefined) {
      throw new ImgstreamError(ErrorCode.SNAPSHOT_ALREADY_EXISTS, `snapshot ${JSON.stringify(key)} already exists`, { key });
    }
    if (parent !== '') {
      const p = this.get(parent);
      if (p === undefined) throw new ImgstreamError(ErrorCode.SNAPSHOT_NOT_FOUND, `parent snapshot ${JSON.stringify(parent)} does not exist`, { key: parent });
      if (p.kind !== 'committed') throw invalidArgument(`parent ${JSON.stringify(parent)} is not a committed snapshot`, { key: parent });
    }
  }

  /** Records a new active or view snapshot (Prepare / View). */
  async create(
    kind: 'active' | 'view',
    key: string,
    parent: string,
    id: string,
    labels: Readonly<Record<string, string>> | undefined,
    nowMs: number,
  ): Promise<SnapshotInfo> {
    this.checkCreate(key, parent);
    const record: SnapshotRecord = { id, kind, parent, labels: validateLabels(labels), createdAtMs: nowMs, updatedAtMs: nowMs };
    await this.#write((s) => {
      s.snapshots[key] = record;
    });
    return toInfo(key, record);
  }

  /**
   * Records a committed snapshot that was never active: a remote layer whose files live in
   * `contentDir` (a FUSE view or local cache directory).
   */
  async createRemote(
    name: string,
    parent: string,
    id: string,
    contentDir: string,
    labels: Readonly<Record<string, string>>,
    nowMs: number,
  ): Promise<SnapshotInfo> {
    this.checkCreate(name, parent);
    const record: SnapshotRecord = {
      id,
      kind: 'committed',
      parent,
      labels: validateLabels(labels),
      createdAtMs: nowMs,
      updatedAtMs: nowMs,
      usage: { sizeBytes: 0, inodes: 0 },
      contentDir,
    };
    await this.#write((s) => {
      s.snapshots[name] = record;
    });
    return toInfo(name, record);
  }

  /** Throws the error committing `key` as `name` would throw. */
  checkCommit(name: string, key: string): SnapshotRecord {
    if (name === '') throw invalidArgument('committed snapshot name must not be empty');
    if (this.get(name) !== undefined) {
      throw new ImgstreamError(ErrorCode.SNAPSHOT_ALREADY_EXISTS, `committed snapshot ${JSON.stringify(name)} already exists`, { key: name });
    }
    const active = this.require(key);
    if (active.kind !== 'active') {
      throw new ImgstreamError(ErrorCode.SNAPSHOT_WRONG_KIND, `snapshot ${JSON.stringify(key)} is ${active.kind}, not active`, { key });
    }
    return active;
  }

  /**
   * Turns the active snapshot `key` into the committed snapshot `name`: same id and directory,
   * new timestamps, labels replaced by `labels` (not inherited), `usage` recorded.
   */
  async commit(name: string, key: string, labels: Readonly<Record<string, string>> | undefined, usage: SnapshotUsage, nowMs: number): Promise<SnapshotInfo> {
    const active = this.checkCommit(name, key);
    const record: SnapshotRecord = {
      id: active.id,
      kind: 'committed',
      parent: active.parent,
      labels: validateLabels(labels),
      createdAtMs: nowMs,
      updatedAtMs: nowMs,
      usage,
    };
    await this.#write((s) => {
      delete s.snapshots[key];
      s.snapshots[name] = record;
    });
    return toInfo(name, record);
  }

  /** Names of the snapshots whose parent is `name`. */
  children(name: string): string[] {
    return Object.entries(this.#state.snapshots)
      .filter(([, r]) => r.parent === name)
      .map(([k]) => k);
  }

  /** Forgets a snapshot without children; returns its record (the caller removes its directory). */
  async remove(key: string): Promise<SnapshotRecord> {
    const record = this.require(key);
    const children = this.children(key);
    if (children.length > 0) {
      throw new ImgstreamError(ErrorCode.SNAPSHOT_HAS_CHILDREN, `snapshot ${JSON.stringify(key)} has ${children.length} child snapshot(s)`, {
        key,
        children,
      });
    }
    await this.#write((s) => {
      delete s.snapshots[key];
    });
    return record;
  }

  /**
   * containerd's Update: with no field paths, replaces all labels; `labels` replaces all labels;
   * `labels.K` sets (or, when absent from `labels`, deletes) one label. Any other path is invalid.
   */
  async update(name: string, labels: Readonly<Record<string, string>> | undefined, fieldPaths: readonly string[], nowMs: number): Promise<SnapshotInfo> {
    const current = this.require(name);
    const given = labels ?? {};
    let next: Record<string, string> = { ...current.labels };
    if (fieldPaths.length === 0) {
      next = { ...given };
    } else {
      for (const path of fieldPaths) {
        if (path.startsWith('labels.')) {
          const k = path.slice('labels.'.length);
          if (Object.hasOwn(given, k)) next[k] = given[k]!;
          else delete next[k];
        } else if (path === 'labels') {
          next = { ...given };
        } else {
          throw invalidArgument(`cannot update field ${JSON.stringify(path)} of snapshot ${JSON.stringify(name)}`, { key: name, fieldPath: path });
        }
      }
    }
    const record: SnapshotRecord = { ...current, labels: validateLabels(next), updatedAtMs: nowMs };
    await this.#write((s) => {
      s.snapshots[name] = record;
    });
    return toInfo(name, record);
  }

  /** Persists `change` applied to a copy of the state, then makes the copy current. */
  async #write(change: (draft: MetadataFileV1) => void): Promise<void> {
    const draft: MetadataFileV1 = { version: 1, nextId: this.#state.nextId, snapshots: { ...this.#state.snapshots } };
    change(draft);
    await writeFileAtomic(this.path, JSON.stringify(draft, null, 1), { mode: 0o600 });
    this.#state = draft;
  }
}

function toInfo(name: string, r: SnapshotRecord): SnapshotInfo {
  return {
    name,
    parent: r.parent,
    kind: r.kind,
    createdAt: new Date(r.createdAtMs),
    updatedAt: new Date(r.updatedAtMs),
    labels: { ...r.labels },
  };
}

/** The fields containerd's snapshot filters can address. */
function lookupField(info: SnapshotInfo, path: readonly string[]): string | undefined {
  switch (path[0]) {
    case 'kind':
      return info.kind;
    case 'name':
      return info.name;
    case 'parent':
      return info.parent;
    case 'labels': {
      const k = path.slice(1).join('.');
      return Object.hasOwn(info.labels, k) ? info.labels[k] : undefined;
    }
    default:
      return undefined;
  }
}

const KINDS = new Set(['view', 'active', 'committed']);

function checkState(v: unknown, path: string): MetadataFileV1 {
  const bad = (why: string) => new ImgstreamError(ErrorCode.SNAPSHOT_METADATA_CORRUPT, `snapshot metadata ${path}: ${why}`, { path });
  if (typeof v !== 'object' || v === null) throw bad('not an object');
  const o = v as Partial<MetadataFileV1>;
  if (o.version !== 1) throw bad(`unsupported version ${String(o.version)}`);
  if (typeof o.nextId !== 'number' || !Number.isSafeInteger(o.nextId) || o.nextId < 1) throw bad('bad nextId');
  if (typeof o.snapshots !== 'object' || o.snapshots === null) throw bad('no snapshots table');
  const snapshots: Record<string, SnapshotRecord> = {};
  for (const [name, r] of Object.entries(o.snapshots)) {
    if (typeof r !== 'object' || r === null) throw bad(`snapshot ${name} is not an object`);
    if (typeof r.id !== 'string' || !/^[0-9]+$/.test(r.id)) throw bad(`snapshot ${name} has a bad id`);
    if (!KINDS.has(r.kind)) throw bad(`snapshot ${name} has a bad kind`);
    if (typeof r.parent !== 'string') throw bad(`snapshot ${name} has a bad parent`);
    if (typeof r.labels !== 'object' || r.labels === null) throw bad(`snapshot ${name} has bad labels`);
    if (typeof r.createdAtMs !== 'number' || typeof r.updatedAtMs !== 'number') throw bad(`snapshot ${name} has bad timestamps`);
    snapshots[name] = r;
  }
  for (const [name, r] of Object.entries(snapshots)) {
    if (r.parent !== '' && snapshots[r.parent]?.kind !== 'committed') throw bad(`snapshot ${name} has a missing or uncommitted parent`);
  }
  return { version: 1, nextId: o.nextId, snapshots };
}
