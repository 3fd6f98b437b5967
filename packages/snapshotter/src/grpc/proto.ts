import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';

/**
 * The containerd wire contract, from imgstream's own .proto files shipped in this package's
 * `proto/` directory (google.protobuf well-known types come with protobufjs). Loaded at run time
 * with @grpc/proto-loader: no generated code to keep in sync, and the .proto text stays readable.
 */
export const SNAPSHOTS_SERVICE = 'containerd.services.snapshots.v1.Snapshots';

/** Wire values of containerd's snapshot Kind enum. */
export const WireKind = Object.freeze({ UNKNOWN: 0, VIEW: 1, ACTIVE: 2, COMMITTED: 3 });

let cached: PackageDefinition | undefined;

/** Where the .proto files are: `../../proto` from src/grpc, `../proto` from the bundled dist/. */
function protoDir(): string {
  for (const rel of ['../../proto', '../proto']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}/containerd/services/snapshots/v1/snapshots.proto`)) return dir;
  }
  throw new Error(`containerd .proto files not found beside ${import.meta.url}`);
}

/** The package definition of the Snapshots service, loaded once. */
export function snapshotsPackageDefinition(): PackageDefinition {
  cached ??= loadSync('containerd/services/snapshots/v1/snapshots.proto', {
    includeDirs: [protoDir()],
    keepCase: true,
    longs: Number,
    enums: Number,
    defaults: true,
    arrays: true,
    objects: true,
  });
  return cached;
}
