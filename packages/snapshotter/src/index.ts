// The public surface of @imgstream/snapshotter: named re-exports only.
export { Snapshotter } from './snapshotter.js';
export type { CreateSnapshotOptions, SignalOptions, SnapshotterEvents, SnapshotterOptions } from './snapshotter.js';
export { SnapshotterServer } from './server.js';
export type { SnapshotterServerEvents, SnapshotterServerOptions } from './server.js';
export type { RequestEvent } from './grpc/snapshots-service.js';
export { SnapshotStore } from './store/snapshot-store.js';
export type { SnapshotRecord } from './store/snapshot-store.js';
export { parseFilters } from './store/filters.js';
export type { FieldLookup, Filter } from './store/filters.js';
export type { SnapshotInfo, SnapshotKind, SnapshotMount, SnapshotUsage } from './snapshot-info.js';
export { parseLayerLabels, SnapshotLabel } from './labels.js';
export type { LayerLabels } from './labels.js';
export type { RemoteSnapshotDecider, RemoteSnapshotDecision, RemoteSnapshotInfo, RemoteSnapshotRequest } from './remote/remote-snapshot-decider.js';
export { grpcStatusByErrorCode } from './grpc/status.js';
export { SNAPSHOTS_SERVICE, snapshotsPackageDefinition, WireKind } from './grpc/proto.js';
