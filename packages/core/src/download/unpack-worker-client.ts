import { setImmediate as turn } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { ErrorCode, ImgstreamError } from '../errors.js';
import type { LayerBlobUnpackOptions, LayerBlobUnpackResult } from './unpack-pipeline.js';
import { deserialiseError, type FromUnpackWorker, type ToUnpackWorker, type UnpackWorkerData } from './unpack-worker-protocol.js';

/** The blob is copied into buffers of this many bytes, one per message (stream bodies come in 16–64 KiB chunks, ranges in 8 MiB). */
const MESSAGE_BYTES = 1024 * 1024;
/** Compressed bytes sent to a worker and not yet taken by its pipeline: the memory bound of one download's hand-over. */
const MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;
/** How long an aborted worker may take to stop its unpack and answer before it is terminated, in ms. */
const ABORT_GRACE_MS = 2_000;

let defaultWorkerUrl: URL | undefined;

/**
 * The worker's entry: `dist/unpack-worker.js` next to the built chunk this code is in, or
 * `unpack-worker.ts` when running from source. From source a bootstrap registers tsx first: on
 * Node 20, tsx's `--import tsx` registers its loader in the main thread only, although workers
 * inherit the flag.
 */
function workerUrl(): URL {
  if (defaultWorkerUrl !== undefined) return defaultWorkerUrl;
  if (!import.meta.url.endsWith('.ts')) return (defaultWorkerUrl = new URL('./unpack-worker.js', import.meta.url));
  const entry = new URL('./unpack-worker.ts', import.meta.url);
  let tsx: string;
  try {
    tsx = import.meta.resolve('tsx/esm/api');
  } catch {
    return (defaultWorkerUrl = entry); // a runtime that loads .ts by itself
  }
  const bootstrap = `const { register } = await import(${JSON.stringify(tsx)});\nregister();\nawait import(${JSON.stringify(entry.href)});\n`;
  return (defaultWorkerUrl = new URL(`data:text/javascript,${encodeURIComponent(bootstrap)}`));
}

/**
 * Runs {@link unpackLayerBlob} in a new worker thread and feeds it `blob`. The bytes are copied into
 * buffers of {@link MESSAGE_BYTES} that are transferred to the worker, which copies them out and
 * transfers them back for reuse: the chunks of `blob` are never transferred (a RangeReader may hand
 * out views of memory it keeps), and this thread copies into warm pages instead of paying the page
 * faults of fresh allocations (measured: most of its remaining cost otherwise). At most
 * {@link MAX_IN_FLIGHT_BYTES} wait in the worker, so `blob` is pulled no faster than the worker
 * unpacks. Errors of the worker come back with their codes (see unpack-worker-protocol.ts); a worker
 * that crashes or exits without an answer is IMGSTREAM_TOOL_FAILED. When `signal` aborts, or `blob`
 * fails, the worker is told to stop (terminated if it does not within {@link ABORT_GRACE_MS}); the
 * promise settles only after the worker has exited, so no file operation of it is still running.
 * `workerEntry` replaces the worker's entry (tests).
 */
export async function unpackLayerBlobInWorker(blob: AsyncIterable<Uint8Array>, options: LayerBlobUnpackOptions, workerEntry?: URL): Promise<LayerBlobUnpackResult> {
  const { signal } = options;
  signal.throwIfAborted();
  const workerData: UnpackWorkerData = {
    digest: options.digest,
    ...(options.diffId !== undefined ? { diffId: options.diffId } : {}),
    root: options.root,
    scratchDir: options.scratchDir,
  };
  let worker: Worker;
  try {
    worker = new Worker(workerEntry ?? workerUrl(), { workerData });
  } catch (err) {
    throw workerFailed(`cannot start the unpack worker: ${(err as Error).message}`, err);
  }
  const send = (message: ToUnpackWorker, transfer?: ArrayBuffer[]): void => worker.postMessage(message, transfer);

  let outcome: { result: LayerBlobUnpackResult } | { error: unknown } | undefined;
  let settle!: () => void;
  const settled = new Promise<void>((resolve) => (settle = resolve));
  let inFlight = 0;
  let onCredit: (() => void) | undefined;
  const credit = (): void => {
    const wake = onCredit;
    onCredit = undefined;
    wake?.();
  };
  const finish = (o: NonNullable<typeof outcome>): void => {
    if (outcome === undefined) {
      outcome = o;
      settle();
    }
    credit();
  };
  const buffers: ArrayBuffer[] = [];
  worker.on('message', (m: FromUnpackWorker) => {
    if (m.type === 'buffer') {
      buffers.push(m.data);
    } else if (m.type === 'ack') {
      inFlight -= m.bytes;
      credit();
    } else if (m.type === 'done') {
      finish({ result: m.result });
    } else {
      finish({ error: deserialiseError(m.error) });
    }
  });
  worker.on('error', (err) => finish({ error: workerFailed(`unpack worker failed: ${err.message}`, err) }));
  worker.on('messageerror', (err) => finish({ error: workerFailed(`unpack worker sent an unreadable message: ${err.message}`, err) }));
  worker.on('exit', (code) => finish({ error: workerFailed(`unpack worker exited with code ${code} without a result`) }));

  let graceTimer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    if (graceTimer !== undefined) return;
    send({ type: 'abort' });
    graceTimer = setTimeout(() => void worker.terminate(), ABORT_GRACE_MS);
  };
  signal.addEventListener('abort', stop, { once: true });

  /** Sends the first `byteLength` bytes of `data` once the worker has room; false when the worker has already finished. */
  const post = async (data: ArrayBuffer, byteLength: number): Promise<boolean> => {
    while (outcome === undefined && inFlight > 0 && inFlight + byteLength > MAX_IN_FLIGHT_BYTES) {
      await new Promise<void>((resolve) => (onCredit = resolve));
    }
    if (outcome !== undefined) return false;
    inFlight += byteLength;
    send({ type: 'chunk', data, byteLength }, [data]);
    await turn(); // one copy per turn of the event loop: an 8 MiB range is not copied in one go
    return true;
  };
  /** Copies the blob into message buffers; stops early when the worker has finished (failed). */
  const pump = async (): Promise<void> => {
    let buffer: Uint8Array | undefined;
    let fill = 0;
    for await (const chunk of blob) {
      for (let offset = 0; offset < chunk.byteLength; ) {
        buffer ??= new Uint8Array(buffers.pop() ?? new ArrayBuffer(MESSAGE_BYTES));
        const n = Math.min(MESSAGE_BYTES - fill, chunk.byteLength - offset);
        buffer.set(chunk.subarray(offset, offset + n), fill);
        fill += n;
        offset += n;
        if (fill === MESSAGE_BYTES) {
          if (!(await post(buffer.buffer as ArrayBuffer, fill))) return;
          buffer = undefined;
          fill = 0;
        }
      }
      if (outcome !== undefined) return;
    }
    if (buffer !== undefined && !(await post(buffer.buffer as ArrayBuffer, fill))) return;
    if (outcome === undefined) send({ type: 'end' });
  };

  try {
    try {
      await pump();
    } catch (err) {
      stop();
      await settled;
      throw err;
    }
    await settled;
    signal.throwIfAborted();
    const o = outcome!;
    if ('error' in o) throw o.error;
    return o.result;
  } finally {
    signal.removeEventListener('abort', stop);
    clearTimeout(graceTimer);
    await worker.terminate();
  }
}

function workerFailed(message: string, cause?: unknown): ImgstreamError {
  return new ImgstreamError(ErrorCode.TOOL_FAILED, message, { tool: 'unpack-worker', ...(cause !== undefined ? { cause } : {}) });
}
