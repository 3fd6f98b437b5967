import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Teardown } from './tmp.ts';

/** What a rule does to a matching request. */
export type Fault =
  /** Answer with this status (e.g. a 503 burst, a 429 with Retry-After) instead of forwarding. */
  | { kind: 'status'; status: number; retryAfter?: string; body?: string; contentType?: string }
  /** Close the connection before any response. */
  | { kind: 'reset-before-headers' }
  /** Forward headers and the first `afterBytes` body bytes, then reset the connection. */
  | { kind: 'reset-body'; afterBytes: number }
  /** Forward headers and `afterBytes` body bytes, then send nothing more (the client must time out). */
  | { kind: 'stall-body'; afterBytes: number }
  /** Forward the body in `chunkBytes` pieces with `delayMs` between them. */
  | { kind: 'slow-body'; chunkBytes: number; delayMs: number }
  /** Drop the `Range` header, so the registry answers 200 with the whole blob. */
  | { kind: 'ignore-range' }
  /** Forward without `Authorization`, so the registry answers 401 with its challenge (an expired or revoked token). */
  | { kind: 'drop-authorization' }
  /** Flip one bit of the body byte at `atByte` (counted in this response). */
  | { kind: 'corrupt-body'; atByte: number }
  /** Answer a redirect to `to(path)` (another origin, e.g. a storage proxy). */
  | { kind: 'redirect'; status?: number; to: (pathAndQuery: string) => string }
  /** Answer 401 with a Basic challenge unless the request carries `Authorization`. */
  | { kind: 'require-authorization' }
  /**
   * Forward only once a request whose path matches `until` has arrived (at any time before), or
   * after `timeoutMs`: shows that a client sends two requests at the same time. The log entry's
   * `held` says which.
   */
  | { kind: 'hold'; until: RegExp; timeoutMs: number };

export interface FaultRule {
  /** HTTP method to match; default any. */
  method?: string;
  /** Pattern the path (with query) must match; default any. */
  path?: RegExp;
  /** Let this many matching requests through untouched first. Default 0. */
  skip?: number;
  /** Apply to this many matching requests, then stop. Default: every one. */
  times?: number;
  fault: Fault;
}

export interface ProxyLogEntry {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** Kind of the fault applied, if any. */
  fault: Fault['kind'] | undefined;
  /** For a `hold`: released by the awaited request, or timed out. */
  held?: 'released' | 'timed-out';
}

export interface FaultProxy {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly url: string;
  readonly port: number;
  /** Every request received, in order. */
  readonly log: ProxyLogEntry[];
  /** Replaces the rules (counters restart). */
  setRules(rules: FaultRule[]): void;
  stop(): Promise<void>;
}

interface LiveRule {
  rule: FaultRule;
  seen: number;
  applied: number;
}

/**
 * An HTTP proxy in front of `upstream` (e.g. a docker-registry URL) that injects faults into
 * requests matching its rules: 5xx/429 bursts, resets before or during the body, stalled and slow
 * bodies, ignored Range, dropped credentials, corrupted bytes, redirects, requests held until another
 * arrives. Stopped after the test.
 */
export async function startFaultProxy(t: Teardown, upstream: string, rules: FaultRule[] = []): Promise<FaultProxy> {
  const target = new URL(upstream);
  let live: LiveRule[] = rules.map((rule) => ({ rule, seen: 0, applied: 0 }));
  const log: ProxyLogEntry[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();

  const pick = (req: IncomingMessage): Fault | undefined => {
    for (const l of live) {
      const r = l.rule;
      if (r.method !== undefined && r.method !== req.method) continue;
      if (r.path !== undefined && !r.path.test(req.url ?? '')) continue;
      l.seen++;
      if (l.seen <= (r.skip ?? 0)) continue;
      if (r.times !== undefined && l.applied >= r.times) continue;
      l.applied++;
      return r.fault;
    }
    return undefined;
  };

  const holds = new Set<{ until: RegExp; release: () => void }>();
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const fault = pick(req);
    const entry: ProxyLogEntry = { method: req.method ?? '', path: req.url ?? '', headers: { ...req.headers }, fault: fault?.kind };
    log.push(entry);
    for (const h of holds) if (h.until.test(entry.path)) h.release();
    if (fault?.kind === 'hold') {
      const go = (how: 'released' | 'timed-out') => {
        if (entry.held !== undefined) return;
        entry.held = how;
        holds.delete(hold);
        clearTimeout(timer);
        timers.delete(timer);
        serve(req, res, undefined);
      };
      const hold = { until: fault.until, release: () => go('released') };
      const timer = setTimeout(() => go('timed-out'), fault.timeoutMs);
      timers.add(timer);
      holds.add(hold);
      if (log.some((e) => e !== entry && fault.until.test(e.path))) go('released');
      return;
    }
    serve(req, res, fault);
  };

  const serve = (req: IncomingMessage, res: ServerResponse, fault: Exclude<Fault, { kind: 'hold' }> | undefined) => {
    if (fault?.kind === 'status') {
      req.resume();
      const headers: Record<string, string> = { 'content-type': fault.contentType ?? 'application/json' };
      if (fault.retryAfter !== undefined) headers['retry-after'] = fault.retryAfter;
      res.writeHead(fault.status, headers);
      res.end(fault.body ?? JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'injected fault' }] }));
      return;
    }
    if (fault?.kind === 'reset-before-headers') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'redirect') {
      req.resume();
      res.writeHead(fault.status ?? 307, { location: fault.to(req.url ?? '/') });
      res.end();
      return;
    }
    if (fault?.kind === 'require-authorization' && req.headers.authorization === undefined) {
      req.resume();
      res.writeHead(401, { 'www-authenticate': 'Basic realm="fault-proxy"', 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
      return;
    }
    const headers = { ...req.headers, host: target.host };
    if (fault?.kind === 'ignore-range') delete headers.range;
    if (fault?.kind === 'drop-authorization') delete headers.authorization;
    const up = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (upRes) => {
      const outHeaders = { ...upRes.headers };
      // Location headers point at the upstream; rewrite them to the proxy.
      if (typeof outHeaders.location === 'string') outHeaders.location = outHeaders.location.replace(target.origin, `http://${req.headers.host}`);
      res.writeHead(upRes.statusCode ?? 502, outHeaders);
      let sent = 0;
      if (fault === undefined || fault.kind === 'ignore-range' || fault.kind === 'drop-authorization' || fault.kind === 'require-authorization') {
        upRes.pipe(res);
        return;
      }
      const queue: Buffer[] = [];
      let flushing = false;
      let ended = false;
      const flushSlow = () => {
        if (fault.kind !== 'slow-body') return;
        if (flushing) return;
        const next = queue.shift();
        if (next === undefined) {
          if (ended) res.end();
          return;
        }
        flushing = true;
        res.write(next);
        const timer = setTimeout(() => {
          timers.delete(timer);
          flushing = false;
          flushSlow();
        }, fault.delayMs);
        timers.add(timer);
      };
      upRes.on('data', (chunk: Buffer) => {
        if (fault.kind === 'reset-body' || fault.kind === 'stall-body') {
          const room = fault.afterBytes - sent;
          if (room > 0) res.write(chunk.subarray(0, room));
          sent += Math.min(room > 0 ? room : 0, chunk.length);
          if (sent >= fault.afterBytes) {
            upRes.destroy();
            if (fault.kind === 'reset-body') setImmediate(() => res.socket?.destroy());
          }
          return;
        }
        if (fault.kind === 'corrupt-body') {
          const at = fault.atByte - sent;
          if (at >= 0 && at < chunk.length) {
            chunk = Buffer.from(chunk);
            chunk[at] = (chunk[at] as number) ^ 0x01;
          }
          sent += chunk.length;
          res.write(chunk);
          return;
        }
        if (fault.kind === 'slow-body') {
          for (let i = 0; i < chunk.length; i += fault.chunkBytes) queue.push(chunk.subarray(i, i + fault.chunkBytes));
          flushSlow();
        }
      });
      upRes.on('end', () => {
        ended = true;
        if (fault.kind === 'corrupt-body') res.end();
        if (fault.kind === 'slow-body') flushSlow();
        if ((fault.kind === 'reset-body') && sent < fault.afterBytes) res.socket?.destroy();
      });
    });
    up.on('error', () => res.socket?.destroy());
    req.pipe(up);
  };

  const server = createServer(handler);
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('fault proxy has no port');
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const timer of timers) clearTimeout(timer);
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.after(stop);
  return {
    host: `127.0.0.1:${addr.port}`,
    url: `http://127.0.0.1:${addr.port}`,
    port: addr.port,
    log,
    setRules(next) {
      live = next.map((rule) => ({ rule, seen: 0, applied: 0 }));
    },
    stop,
  };
}
