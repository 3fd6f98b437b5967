import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Snapshotter } from '../snapshotter.js';
import type { SnapshotInfo, SnapshotKind, SnapshotMount } from '../snapshot-info.js';
import { toServiceError } from './status.js';
import { WireKind } from './proto.js';

/** Wire shapes (proto-loader with keepCase, longs and enums as numbers, defaults filled in). */
interface WireMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}
interface WireTimestamp {
  seconds: number;
  nanos: number;
}
interface WireInfo {
  name: string;
  parent: string;
  kind: number;
  created_at: WireTimestamp | null;
  updated_at: WireTimestamp | null;
  labels: Record<string, string>;
}
interface KeyRequest {
  snapshotter: string;
  key: string;
}
interface CreateRequest extends KeyRequest {
  parent: string;
  labels: Record<string, string>;
}
interface CommitRequest extends KeyRequest {
  name: string;
  labels: Record<string, string>;
}
interface UpdateRequest {
  snapshotter: string;
  info: WireInfo | null;
  update_mask: { paths: string[] } | null;
}
interface ListRequest {
  snapshotter: string;
  filters: string[];
}

/** One finished RPC, for the server's `request` event. */
export interface RequestEvent {
  readonly method: string;
  /** The `snapshotter` field of the request (the proxy plugin's name in containerd's config). */
  readonly snapshotter: string;
  /** The key or name the request addressed, when it has one. */
  readonly key?: string;
  readonly durationMs: number;
  /** The imgstream error code or error message, when it failed. */
  readonly error?: string;
}

const kindToWire: Record<SnapshotKind, number> = { view: WireKind.VIEW, active: WireKind.ACTIVE, committed: WireKind.COMMITTED };

function timestamp(d: Date): WireTimestamp {
  const ms = d.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

function wireInfo(info: SnapshotInfo): WireInfo {
  return {
    name: info.name,
    parent: info.parent,
    kind: kindToWire[info.kind],
    created_at: timestamp(info.createdAt),
    updated_at: timestamp(info.updatedAt),
    labels: { ...info.labels },
  };
}

function wireMounts(mounts: SnapshotMount[]): WireMount[] {
  return mounts.map((m) => ({ type: m.type, source: m.source, target: m.target ?? '', options: [...m.options] }));
}

/**
 * The containerd Snapshots service over a {@link Snapshotter}: decodes requests, calls the
 * snapshotter, encodes replies, translates errors through the one status table. No logic of its own.
 */
export function snapshotsService(snapshotter: Snapshotter, options: { listBatchSize: number; onRequest: (e: RequestEvent) => void }): UntypedServiceImplementation {
  const { listBatchSize, onRequest } = options;

  /** Runs a unary handler with an AbortSignal that fires when the client cancels. */
  function unary<Req extends { snapshotter: string }, Res>(method: string, key: (req: Req) => string | undefined, fn: (req: Req, signal: AbortSignal) => Promise<Res>) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      const started = performance.now();
      const controller = new AbortController();
      const onCancel = () => controller.abort(Object.assign(new Error(`${method} cancelled by the client`), { name: 'AbortError' }));
      call.once('cancelled', onCancel);
      const k = key(call.request);
      fn(call.request, controller.signal).then(
        (res) => {
          call.removeListener('cancelled', onCancel);
          onRequest({ method, snapshotter: call.request.snapshotter, ...(k ? { key: k } : {}), durationMs: performance.now() - started });
          callback(null, res);
        },
        (err: unknown) => {
          call.removeListener('cancelled', onCancel);
          const e = toServiceError(err);
          onRequest({ method, snapshotter: call.request.snapshotter, ...(k ? { key: k } : {}), durationMs: performance.now() - started, error: errorLabel(err) });
          callback(e, null);
        },
      );
    };
  }

  const empty = {};
  return {
    Prepare: unary<CreateRequest, { mounts: WireMount[] }>('Prepare', (r) => r.key, async (req, signal) => ({
      mounts: wireMounts(await snapshotter.prepare(req.key, req.parent, { labels: req.labels, signal })),
    })),
    View: unary<CreateRequest, { mounts: WireMount[] }>('View', (r) => r.key, async (req, signal) => ({
      mounts: wireMounts(await snapshotter.view(req.key, req.parent, { labels: req.labels, signal })),
    })),
    Mounts: unary<KeyRequest, { mounts: WireMount[] }>('Mounts', (r) => r.key, async (req) => ({ mounts: wireMounts(await snapshotter.mounts(req.key)) })),
    Commit: unary<CommitRequest, object>('Commit', (r) => r.key, async (req, signal) => {
      await snapshotter.commit(req.name, req.key, { labels: req.labels, signal });
      return empty;
    }),
    Remove: unary<KeyRequest, object>('Remove', (r) => r.key, async (req) => {
      await snapshotter.remove(req.key);
      return empty;
    }),
    Stat: unary<KeyRequest, { info: WireInfo }>('Stat', (r) => r.key, async (req) => ({ info: wireInfo(await snapshotter.stat(req.key)) })),
    Update: unary<UpdateRequest, { info: WireInfo }>('Update', (r) => r.info?.name, async (req) => {
      const info = req.info ?? { name: '', labels: {} };
      return { info: wireInfo(await snapshotter.update({ name: info.name, labels: info.labels }, req.update_mask?.paths ?? [])) };
    }),
    Usage: unary<KeyRequest, { size: number; inodes: number }>('Usage', (r) => r.key, async (req, signal) => {
      const u = await snapshotter.usage(req.key, { signal });
      return { size: u.sizeBytes, inodes: u.inodes };
    }),
    Cleanup: unary<{ snapshotter: string }, object>('Cleanup', () => undefined, async () => {
      await snapshotter.cleanup();
      return empty;
    }),
    List: (call: ServerWritableStream<ListRequest, { info: WireInfo[] }>) => {
      const started = performance.now();
      const done = (err?: unknown) =>
        onRequest({ method: 'List', snapshotter: call.request.snapshotter, durationMs: performance.now() - started, ...(err !== undefined ? { error: errorLabel(err) } : {}) });
      snapshotter.list(call.request.filters).then(
        (infos) => {
          for (let i = 0; i < infos.length && !call.cancelled; i += listBatchSize) {
            call.write({ info: infos.slice(i, i + listBatchSize).map(wireInfo) });
          }
          call.end();
          done();
        },
        (err: unknown) => {
          call.emit('error', toServiceError(err));
          done(err);
        },
      );
    },
  };
}

function errorLabel(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code;
  return err instanceof Error ? err.message : String(err);
}
