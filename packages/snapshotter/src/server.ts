import { lstat, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { isAbsolute } from 'node:path';
import { Server, ServerCredentials, loadPackageDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { EventEmitter } from 'eventemitter3';
import { channel, defaults, ErrorCode, ImgstreamError, invalidOption, publish } from '@imgstream/core';
import { Snapshotter, type SnapshotterOptions } from './snapshotter.js';
import { snapshotsPackageDefinition } from './grpc/proto.js';
import { snapshotsService, type RequestEvent } from './grpc/snapshots-service.js';

/** Options of {@link SnapshotterServer}; the {@link SnapshotterOptions} build its snapshotter. */
export interface SnapshotterServerOptions extends SnapshotterOptions {
  /**
   * Serve this snapshotter instead of building one from the options. The server then does not
   * close it. Default: a new {@link Snapshotter} owned (and closed) by the server.
   */
  snapshotter?: Snapshotter;
  /** Snapshot infos per List response message. Default: `defaults.snapshotter.listBatchSize` (100). */
  listBatchSize?: number;
  /**
   * How long close() lets in-flight RPCs finish before cancelling them, in ms.
   * Default: `defaults.snapshotter.closeGraceMs` (5000).
   */
  closeGraceMs?: number;
  /** Aborting it closes the server (as close() does). */
  signal?: AbortSignal;
}

/** What a {@link SnapshotterServer} emits. */
export interface SnapshotterServerEvents {
  /** The server accepts connections on this unix socket. */
  listening: [socketPath: string];
  /** An RPC finished (successfully or not). */
  request: [event: RequestEvent];
  /** The server stopped accepting and every RPC ended. */
  closed: [];
}

const diagRequest = channel('snapshotter:request');

/**
 * containerd's Snapshots gRPC service on a unix socket, for containerd's
 * `[proxy_plugins.<name>] type = "snapshot"`. Lifecycle: `listen(socketPath)`, `close()`
 * (graceful, idempotent). Use after close throws IMGSTREAM_CLOSED.
 */
export class SnapshotterServer extends EventEmitter<SnapshotterServerEvents> {
  readonly snapshotter: Snapshotter;
  readonly #ownsSnapshotter: boolean;
  readonly #server: Server;
  readonly #closeGraceMs: number;
  #socketPath: string | undefined;
  #closing: Promise<void> | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = () => void this.close();

  constructor(options: SnapshotterServerOptions = {}) {
    super();
    const listBatchSize = options.listBatchSize ?? defaults.snapshotter.listBatchSize;
    if (!Number.isSafeInteger(listBatchSize) || listBatchSize < 1) throw invalidOption('listBatchSize', 'must be a positive integer');
    this.#closeGraceMs = options.closeGraceMs ?? defaults.snapshotter.closeGraceMs;
    if (!Number.isFinite(this.#closeGraceMs) || this.#closeGraceMs < 0) throw invalidOption('closeGraceMs', 'must be a non-negative number of ms');
    this.#ownsSnapshotter = options.snapshotter === undefined;
    this.snapshotter = options.snapshotter ?? new Snapshotter(options);
    this.#server = new Server();
    const pkg = loadPackageDefinition(snapshotsPackageDefinition()) as unknown as {
      containerd: { services: { snapshots: { v1: { Snapshots: { service: ServiceDefinition } } } } };
    };
    this.#server.addService(
      pkg.containerd.services.snapshots.v1.Snapshots.service,
      snapshotsService(this.snapshotter, {
        listBatchSize,
        onRequest: (e) => {
          publish(diagRequest, e);
          this.emit('request', e);
        },
      }),
    );
    this.#signal = options.signal;
    if (this.#signal?.aborted) this.#closing = Promise.resolve();
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** The unix socket path while listening. */
  get socketPath(): string | undefined {
    return this.#socketPath;
  }

  /**
   * Opens the snapshotter and serves on the unix socket `socketPath`. A stale socket file nobody
   * listens on is replaced; a live one is IMGSTREAM_INVALID_OPTION.
   */
  async listen(socketPath: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#closing !== undefined) throw new ImgstreamError(ErrorCode.CLOSED, 'snapshotter server is closed');
    if (this.#socketPath !== undefined) throw invalidOption('socketPath', `already listening on ${this.#socketPath}`);
    if (!isAbsolute(socketPath)) throw invalidOption('socketPath', `must be an absolute path, got ${JSON.stringify(socketPath)}`);
    options.signal?.throwIfAborted();
    await this.snapshotter.ready();
    await removeStaleSocket(socketPath);
    options.signal?.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      this.#server.bindAsync(`unix:${socketPath}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
    });
    this.#socketPath = socketPath;
    this.emit('listening', socketPath);
  }

  /** Stops accepting, lets RPCs finish for closeGraceMs, then cancels them; closes an owned snapshotter. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, this.#closeGraceMs);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (this.#ownsSnapshotter) await this.snapshotter.close();
    if (this.#socketPath !== undefined) await rm(this.#socketPath, { force: true });
    this.emit('closed');
  }
}

/** Removes a socket file that no one listens on (left by a crash); refuses to replace a live one. */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw invalidOption('socketPath', `${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (live) throw invalidOption('socketPath', `another process is listening on ${path}`);
  await rm(path, { force: true });
}
