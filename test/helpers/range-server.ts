/**
 * TEST-ONLY: an HTTP server on 127.0.0.1 serving one blob with Range support, recording every
 * request, with fault injection; and an HTTP RangeReader for it (the registry client's reader
 * replaces it at integration).
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RangeReader } from '@imgstream/core';
import type { Teardown } from './tmp.ts';

export interface RecordedRequest {
  readonly start: number;
  /** inclusive */
  readonly end: number;
  readonly length: number;
}

export interface RangeServerOptions {
  /** Called per request; return 'reset' to destroy the socket mid-body, 'error' for a 503, or undefined. */
  fault?: (req: RecordedRequest, n: number) => 'reset' | 'error' | undefined;
  /** Bytes per second cap for each response (throttling), 0 = unlimited. */
  bytesPerSecond?: number;
  /** Delay before answering, ms. */
  delayMs?: number;
}

export interface RangeServer {
  readonly url: string;
  readonly requests: RecordedRequest[];
  setBlob(blob: Uint8Array): void;
  close(): Promise<void>;
}

export async function startRangeServer(t: Teardown, initial: Uint8Array, options: RangeServerOptions = {}): Promise<RangeServer> {
  let blob = Buffer.from(initial);
  const requests: RecordedRequest[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void handle(req, res);
  });
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = blob.byteLength - 1;
    if (m !== null) {
      start = Number(m[1]);
      end = m[2] === '' ? end : Math.min(end, Number(m[2]));
    }
    if (start > end) {
      res.writeHead(416).end();
      return;
    }
    const rec = { start, end, length: end - start + 1 };
    requests.push(rec);
    const fault = options.fault?.(rec, requests.length);
    if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
    if (fault === 'error') {
      res.writeHead(503).end();
      return;
    }
    res.writeHead(m !== null ? 206 : 200, {
      'content-length': String(rec.length),
      ...(m !== null ? { 'content-range': `bytes ${start}-${end}/${blob.byteLength}` } : {}),
    });
    const body = blob.subarray(start, end + 1);
    if (fault === 'reset') {
      res.write(body.subarray(0, Math.floor(body.byteLength / 2)));
      setTimeout(() => res.socket?.destroy(), 5);
      return;
    }
    const bps = options.bytesPerSecond ?? 0;
    if (bps === 0) {
      res.end(body);
      return;
    }
    const slice = Math.max(1024, Math.floor(bps / 50));
    for (let off = 0; off < body.byteLength; off += slice) {
      if (res.destroyed) return;
      res.write(body.subarray(off, off + slice));
      await new Promise((r) => setTimeout(r, 20));
    }
    res.end();
  }
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  t.after(close);
  return {
    url: `http://127.0.0.1:${port}/blob`,
    requests,
    setBlob: (b) => {
      blob = Buffer.from(b);
    },
    close,
  };
}

/** A RangeReader over HTTP (test-only). */
export function httpRangeReader(url: string, size: number): RangeReader {
  return {
    size,
    readRange(offset, length, options = {}) {
      const end = Math.min(size, offset + length) - 1;
      if (end < offset) return Promise.resolve(new Uint8Array(0));
      return new Promise((resolve, reject) => {
        const req = httpRequest(url, { headers: { range: `bytes=${offset}-${end}` }, signal: options.signal }, (res) => {
          if (res.statusCode !== 206) {
            res.resume();
            reject(new Error(`HTTP ${res.statusCode}`));
            return;
          }
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const body = Buffer.concat(chunks);
            if (body.byteLength !== end - offset + 1) reject(new Error(`truncated body ${body.byteLength}/${end - offset + 1}`));
            else resolve(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
          });
          res.on('error', reject);
          res.on('aborted', () => reject(new Error('response aborted')));
        });
        req.on('error', (err) => reject(options.signal?.aborted ? options.signal.reason : err));
        req.end();
      });
    },
  };
}

/** A resumable stream opener over HTTP (test-only). */
export function httpStreamOpener(url: string): (offset: number, o: { signal: AbortSignal }) => AsyncIterable<Uint8Array> {
  return (offset, { signal }) =>
    (async function* () {
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = httpRequest(url, { headers: { range: `bytes=${offset}-` }, signal }, resolve);
        req.on('error', reject);
        req.end();
      });
      if (res.statusCode !== 206 && res.statusCode !== 200) {
        res.resume();
        throw new Error(`HTTP ${res.statusCode}`);
      }
      const expected = Number(res.headers['content-length']);
      let got = 0;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        got += chunk.byteLength;
        yield chunk;
      }
      if (got !== expected) throw new Error(`truncated stream ${got}/${expected}`);
    })();
}
