import { credentials, loadPackageDefinition, Metadata, type Client, type ServiceError } from '@grpc/grpc-js';
import { snapshotsPackageDefinition } from '@imgstream/snapshotter';

/** A small promise client for the Snapshots service, as containerd's proxy plugin calls it. */
export interface SnapshotsClient {
  call<T = Record<string, unknown>>(method: string, request: object): Promise<T>;
  list(request: object): Promise<Array<{ info: WireInfo[] }>>;
  close(): void;
}

export interface WireInfo {
  name: string;
  parent: string;
  kind: number;
  created_at: { seconds: number; nanos: number };
  updated_at: { seconds: number; nanos: number };
  labels: Record<string, string>;
}

export interface WireMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

type Ctor = new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => Client & Record<string, (...args: unknown[]) => unknown>;

export function snapshotsClient(socketPath: string): SnapshotsClient {
  const pkg = loadPackageDefinition(snapshotsPackageDefinition()) as unknown as {
    containerd: { services: { snapshots: { v1: { Snapshots: Ctor } } } };
  };
  const client = new pkg.containerd.services.snapshots.v1.Snapshots(`unix:${socketPath}`, credentials.createInsecure());
  return {
    call<T>(method: string, request: object): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const fn = client[method]!.bind(client);
        fn(request, new Metadata(), { deadline: Date.now() + 10_000 }, (err: ServiceError | null, res: T) => (err ? reject(err) : resolve(res)));
      });
    },
    list(request: object) {
      return new Promise((resolve, reject) => {
        const out: Array<{ info: WireInfo[] }> = [];
        const stream = client['List']!.bind(client)(request, new Metadata(), { deadline: Date.now() + 10_000 }) as NodeJS.ReadableStream;
        stream.on('data', (m: { info: WireInfo[] }) => out.push(m));
        stream.on('error', reject);
        stream.on('end', () => resolve(out));
      });
    },
    close() {
      client.close();
    },
  };
}
