import { connect, createServer, type Server, type Socket } from 'node:net';

/** One listening port of the proxy and where it forwards to. */
export interface Forward {
  /** Address to listen on (in the proxy's network namespace), e.g. 127.0.0.1. */
  readonly listenHost: string;
  /** Port to listen on; 0 picks a free one (see `DelayProxy.ports`). */
  readonly listenPort: number;
  readonly targetHost: string;
  readonly targetPort: number;
}

export interface DelayProxyOptions {
  /** Round-trip time to add, ms: the client's bytes wait all of it, the answers none (see `handle`). */
  rttMs: number;
  /** A new connection's first client bytes leave only one RTT after accept (the TCP handshake). Default true. */
  emulateHandshake?: boolean;
  /**
   * Bytes a direction may hold (queued for delay + unsent in the socket) before it stops reading
   * its source. Must exceed rate × delay or throughput drops. Default 16 MiB.
   */
  maxQueuedBytes?: number;
}

export interface DelayProxyStats {
  /** Bytes from the targets to the clients (the registry's answers). */
  downstreamBytes: number;
  /** Bytes from the clients to the targets (requests). */
  upstreamBytes: number;
  connections: number;
  /** ms after start/`reset()` when the first and the last byte went to a client (null: none yet). */
  firstDownstreamMs: number | null;
  lastDownstreamMs: number | null;
}

interface Chunk {
  releaseAt: number;
  data: Buffer | null; // null = end of stream
}

/**
 * One direction of a proxied connection: every chunk read from `src` is written to `dst`
 * `delayMs` after it arrived. Chunks are pipelined (many in flight), so throughput is kept;
 * only when more than `maxQueuedBytes` wait does it pause `src`.
 */
class DelayedPipe {
  private readonly queue: Chunk[] = [];
  private head = 0;
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
  private paused = false;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
    private readonly delayMs: number,
    private readonly notBefore: number,
    private readonly maxQueuedBytes: number,
    private readonly count: (n: number) => void,
  ) {
    src.on('data', (data: Buffer) => this.push(data));
    src.on('end', () => this.push(null));
    dst.on('drain', () => this.maybeResume());
  }

  private push(data: Buffer | null): void {
    const now = performance.now();
    this.queue.push({ releaseAt: Math.max(now, this.notBefore) + this.delayMs, data });
    if (data !== null) {
      this.queuedBytes += data.length;
      if (this.queuedBytes + this.dst.writableLength > this.maxQueuedBytes && !this.paused) {
        this.paused = true;
        this.src.pause();
      }
    }
    this.arm();
  }

  private arm(): void {
    if (this.timer !== null || this.immediate !== null || this.head >= this.queue.length) return;
    const next = this.queue[this.head]!;
    const wait = next.releaseAt - performance.now();
    if (wait <= 0.05) {
      this.release();
      return;
    }
    if (wait < 1.2) {
      // Timers have millisecond granularity and fire late: poll the last stretch.
      this.immediate = setImmediate(() => {
        this.immediate = null;
        this.arm();
      });
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.arm();
    }, Math.floor(wait - 1));
  }

  private release(): void {
    const now = performance.now();
    while (this.head < this.queue.length) {
      const chunk = this.queue[this.head]!;
      if (chunk.releaseAt > now + 0.05) break;
      this.head++;
      if (chunk.data === null) {
        this.dst.end();
      } else {
        this.queuedBytes -= chunk.data.length;
        this.count(chunk.data.length);
        if (!this.dst.destroyed) this.dst.write(chunk.data);
      }
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    this.maybeResume();
    this.arm();
  }

  private maybeResume(): void {
    if (this.paused && this.queuedBytes + this.dst.writableLength <= this.maxQueuedBytes / 2) {
      this.paused = false;
      this.src.resume();
    }
  }

  dispose(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.immediate !== null) clearImmediate(this.immediate);
    this.timer = null;
    this.immediate = null;
  }
}

/**
 * A TCP proxy that adds a fixed round-trip time. Used with `tbf` on a veth pair for the rate,
 * because this kernel has no `sch_netem`. It also counts the bytes it carries.
 */
export class DelayProxy {
  private readonly servers: Server[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly stats: DelayProxyStats = { downstreamBytes: 0, upstreamBytes: 0, connections: 0, firstDownstreamMs: null, lastDownstreamMs: null };
  private since = performance.now();
  private readonly rttMs: number;
  private readonly emulateHandshake: boolean;
  private readonly maxQueuedBytes: number;

  constructor(options: DelayProxyOptions) {
    if (!(options.rttMs >= 0)) throw new Error(`rttMs must be >= 0, got ${options.rttMs}`);
    this.rttMs = options.rttMs;
    this.emulateHandshake = options.emulateHandshake ?? true;
    this.maxQueuedBytes = options.maxQueuedBytes ?? 16 * 1024 * 1024;
  }

  /** Starts listening on every forward; resolves with the ports bound, in order. */
  async listen(forwards: readonly Forward[]): Promise<number[]> {
    const ports: number[] = [];
    for (const f of forwards) {
      const server = createServer({ noDelay: true, allowHalfOpen: true }, (client) => this.handle(client, f));
      this.servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(f.listenPort, f.listenHost, () => resolve());
      });
      const addr = server.address();
      if (addr === null || typeof addr === 'string') throw new Error('proxy: no address');
      ports.push(addr.port);
    }
    return ports;
  }

  private handle(client: Socket, f: Forward): void {
    this.stats.connections++;
    const acceptedAt = performance.now();
    const upstream = connect({ host: f.targetHost, port: f.targetPort, noDelay: true, allowHalfOpen: true });
    this.sockets.add(client);
    this.sockets.add(upstream);
    const notBefore = this.emulateHandshake ? acceptedAt + this.rttMs : 0;
    // The whole RTT is added to the client's bytes, the answers pass straight through: a request
    // is answered exactly one RTT later than without the proxy, as with half the delay each way,
    // but the bulk direction costs no timers (this proxy runs on the CPUs of the node under test).
    const up = new DelayedPipe(client, upstream, this.rttMs, notBefore, this.maxQueuedBytes, (n) => (this.stats.upstreamBytes += n));
    upstream.on('data', (data: Buffer) => {
      const at = performance.now() - this.since;
      this.stats.downstreamBytes += data.length;
      this.stats.firstDownstreamMs ??= at;
      this.stats.lastDownstreamMs = at;
    });
    upstream.pipe(client);
    const close = (): void => {
      up.dispose();
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('error', close);
    upstream.on('error', close);
    // Ends travel through the pipes (delayed like data); a socket closes once both its sides are done.
    client.on('close', close);
    upstream.on('close', () => {
      if (client.writableEnded || client.destroyed) return;
      // closed without an end we could forward (e.g. refused): give up on the client too
      setTimeout(() => {
        if (!client.writableEnded) close();
      }, 5);
    });
  }

  snapshot(): DelayProxyStats {
    return { ...this.stats };
  }

  reset(): void {
    this.stats.downstreamBytes = 0;
    this.stats.upstreamBytes = 0;
    this.stats.connections = 0;
    this.stats.firstDownstreamMs = null;
    this.stats.lastDownstreamMs = null;
    this.since = performance.now();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}
