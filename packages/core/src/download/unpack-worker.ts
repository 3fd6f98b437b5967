/**
 * Entry point of an unpack worker thread (built as `dist/unpack-worker.js`): runs
 * {@link unpackLayerBlob} — gunzip, blob digest, diff ID, tar parsing, unpack — on the compressed
 * bytes a LayerDownloader sends it, so none of that runs on the downloader's event loop. Protocol:
 * `unpack-worker-protocol.ts`. One worker serves one download.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { unpackLayerBlob } from './unpack-pipeline.js';
import { serialiseError, type FromUnpackWorker, type ToUnpackWorker, type UnpackWorkerData } from './unpack-worker-protocol.js';

/** The chunks received and not yet taken by the pipeline; taking one acknowledges its bytes. */
class ChunkQueue implements AsyncIterable<Uint8Array> {
  readonly #chunks: Uint8Array[] = [];
  #ended = false;
  #failure: { error: unknown } | undefined;
  #wake: (() => void) | undefined;

  constructor(readonly onTaken: (bytes: number) => void) {}

  push(chunk: Uint8Array): void {
    this.#chunks.push(chunk);
    this.#notify();
  }

  end(): void {
    this.#ended = true;
    this.#notify();
  }

  fail(error: unknown): void {
    this.#failure ??= { error };
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.#failure !== undefined) throw this.#failure.error;
      const chunk = this.#chunks.shift();
      if (chunk !== undefined) {
        this.onTaken(chunk.byteLength);
        yield chunk;
      } else if (this.#ended) {
        return;
      } else {
        await new Promise<void>((resolve) => (this.#wake = resolve));
      }
    }
  }
}

const port = parentPort;
if (port === null) throw new Error('unpack-worker runs in a worker thread');
const post = (message: FromUnpackWorker): void => port.postMessage(message);
const controller = new AbortController();
const input = new ChunkQueue((bytes) => post({ type: 'ack', bytes }));
port.on('message', (message: ToUnpackWorker) => {
  switch (message.type) {
    case 'chunk':
      // copied here (off the downloader's thread), so the buffer can go back at once for reuse
      input.push(Buffer.from(new Uint8Array(message.data, 0, message.byteLength)));
      port.postMessage({ type: 'buffer', data: message.data } satisfies FromUnpackWorker, [message.data]);
      break;
    case 'end':
      input.end();
      break;
    case 'abort':
      controller.abort(new Error('unpack aborted by the downloader'));
      input.fail(controller.signal.reason);
      break;
  }
});

try {
  const result = await unpackLayerBlob(input, { ...(workerData as UnpackWorkerData), signal: controller.signal });
  post({ type: 'done', result });
} catch (err) {
  post({ type: 'error', error: serialiseError(err) });
}
