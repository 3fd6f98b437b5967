import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const PROTO = resolve(fileURLToPath(import.meta.url), '../proto/cri-image.proto');

/** CRI `ImageService.PullImage` against containerd's socket, as the kubelet calls it. */
export async function criPullImage(address: string, image: string, options: { timeoutMs?: number } = {}): Promise<string> {
  const def = await protoLoader.load(PROTO, { keepCase: true, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    runtime: { v1: { ImageService: new (addr: string, creds: grpc.ChannelCredentials) => grpc.Client } };
  };
  const client = new pkg.runtime.v1.ImageService(`unix://${address}`, grpc.credentials.createInsecure()) as grpc.Client & {
    PullImage(req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: { image_ref: string }) => void): void;
  };
  try {
    return await new Promise<string>((ok, fail) =>
      client.PullImage({ image: { image } }, new grpc.Metadata(), { deadline: Date.now() + (options.timeoutMs ?? 120_000) }, (err, res) => (err ? fail(err) : ok(res.image_ref))),
    );
  } finally {
    client.close();
  }
}
