import { request, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmod, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * The control protocol between the snapshotter and the FUSE server: HTTP/1.1 with JSON bodies on
 * a unix socket (mode 0600). Every route is POST except `GET /v1/health`.
 */
export interface LayerRef {
  imageRef: string;
  manifestDigest?: string;
  layerDigest: string;
}

/**
 * `POST /v1/layers/open`: stream this layer if it can be (mount it in the FUSE filesystem).
 * `siblings`: the image's other layers that are open and shown too, with their directories: the
 * snapshotter answers their Prepares from this reply (containerd prepares an image's layers one
 * after another; each round trip reaches a FUSE server busy with the image's prefetch).
 */
export type OpenLayerReply =
  | { remote: true; dir: string; imageKey: string; manifestDigest: string; format: string; siblings?: LayerDir[] }
  | { remote: false; code: string; reason: string };

/** A layer of an image and the directory its remote snapshot records. */
export interface LayerDir {
  layerDigest: string;
  dir: string;
}

/** `POST /v1/layers/lower-dir`: the directory to use as this layer's lowerdir now (re-opens it if needed). */
export interface LowerDirReply {
  dir: string;
  local: boolean;
}

/** `POST /v1/images/release`: an image's last remote snapshot was removed. */
export interface ReleaseImageRequest {
  imageKey: string;
}

export interface ControlHandlers {
  openLayer(req: LayerRef): Promise<OpenLayerReply>;
  lowerDir(req: LayerRef): Promise<LowerDirReply>;
  releaseImage(req: ReleaseImageRequest): Promise<{ released: boolean }>;
}

const MAX_BODY_BYTES = 64 * 1024;

/** Serves the control protocol on `socketPath` (a stale socket file is replaced). */
export async function listenControl(socketPath: string, handlers: ControlHandlers): Promise<Server> {
  await mkdir(dirname(socketPath), { recursive: true });
  await rm(socketPath, { force: true });
  const routes: Record<string, (body: never) => Promise<unknown>> = {
    '/v1/layers/open': handlers.openLayer,
    '/v1/layers/lower-dir': handlers.lowerDir,
    '/v1/images/release': handlers.releaseImage,
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const reply = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && req.url === '/v1/health') return reply(200, { ok: true, pid: process.pid });
    const route = req.method === 'POST' ? routes[req.url ?? ''] : undefined;
    if (route === undefined) {
      req.resume();
      return reply(404, { code: 'NOT_FOUND', message: `${req.method} ${req.url}` });
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return reply(400, { code: 'BAD_REQUEST', message: 'body is not JSON' });
      }
      route.call(handlers, body as never).then(
        (out) => reply(200, out),
        (err: unknown) => reply(500, { code: (err as { code?: string }).code ?? 'ERROR', message: (err as Error)?.message ?? String(err) }),
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(socketPath, 0o600);
  return server;
}

/** Error answered by the control server. */
export class ControlError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The snapshotter's side of the control protocol. */
export class ControlClient {
  constructor(
    readonly socketPath: string,
    readonly timeoutMs = 60_000,
  ) {}

  openLayer(req: LayerRef, options: { signal?: AbortSignal } = {}): Promise<OpenLayerReply> {
    return this.#call('POST', '/v1/layers/open', req, options.signal);
  }

  lowerDir(req: LayerRef, options: { signal?: AbortSignal } = {}): Promise<LowerDirReply> {
    return this.#call('POST', '/v1/layers/lower-dir', req, options.signal);
  }

  releaseImage(req: ReleaseImageRequest): Promise<{ released: boolean }> {
    return this.#call('POST', '/v1/images/release', req, undefined);
  }

  health(options: { signal?: AbortSignal } = {}): Promise<{ ok: boolean; pid: number }> {
    return this.#call('GET', '/v1/health', undefined, options.signal);
  }

  #call<T>(method: string, path: string, body: unknown, signal: AbortSignal | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = request(
        {
          socketPath: this.socketPath,
          path,
          method,
          timeout: this.timeoutMs,
          headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
          ...(signal ? { signal } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            let parsed: unknown;
            try {
              parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              return reject(new ControlError('BAD_REPLY', `control ${path}: reply is not JSON`));
            }
            if (res.statusCode !== 200) {
              const p = parsed as { code?: string; message?: string };
              return reject(new ControlError(p.code ?? 'ERROR', `control ${path}: ${p.message ?? res.statusCode}`));
            }
            resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new ControlError('TIMEOUT', `control ${path}: no answer in ${this.timeoutMs} ms`)));
      req.on('error', (err) => reject(signal?.aborted ? signal.reason : err));
      req.end(data);
    });
  }
}
