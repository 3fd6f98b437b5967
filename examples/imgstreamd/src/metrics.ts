import { createServer, type Server } from 'node:http';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ImagePrefetcher, ImageStreamer } from '@imgstream/core';

/** Prometheus metrics of the FUSE server, fed by the ImageStreamer's events. */
export class DaemonMetrics {
  readonly registry = new Registry();
  readonly #fetchedBytes = new Counter({ name: 'imgstream_fetched_bytes_total', help: 'Compressed bytes fetched from registries', labelNames: ['kind'], registers: [this.registry] });
  readonly #cache = new Counter({ name: 'imgstream_content_cache_lookups_total', help: 'Content cache lookups', labelNames: ['result'], registers: [this.registry] });
  readonly #latency = new Histogram({
    name: 'imgstream_fetch_latency_seconds',
    help: 'Latency of one range request of a read',
    labelNames: ['priority'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly #layers = new Counter({ name: 'imgstream_layers_total', help: 'Layer decisions: remote (streamed) or fallback (pulled by containerd)', labelNames: ['decision', 'reason'], registers: [this.registry] });
  readonly #complete = new Counter({ name: 'imgstream_layers_downloaded_total', help: 'Layers completed in the local layer cache', registers: [this.registry] });
  readonly #fetchErrors = new Counter({ name: 'imgstream_fetch_errors_total', help: 'Failed range requests of reads', registers: [this.registry] });

  readonly #prefetchReports = new Counter({ name: 'imgstream_prefetch_reports_total', help: 'Prefetch report lookups at image start', labelNames: ['status'], registers: [this.registry] });
  readonly #prefetchBytes = new Counter({ name: 'imgstream_prefetched_bytes_total', help: 'Decoded bytes fetched by prefetch replays', registers: [this.registry] });
  readonly #prefetchReads = new Counter({ name: 'imgstream_prefetch_first_reads_total', help: 'First foreground reads of blocks during a replay: hit (prefetched) or miss', labelNames: ['result'], registers: [this.registry] });
  readonly #prefetchRecorded = new Counter({ name: 'imgstream_prefetch_reports_recorded_total', help: 'Prefetch reports recorded and stored', registers: [this.registry] });

  constructor(streamer: ImageStreamer, prefetcher?: ImagePrefetcher) {
    collectDefaultMetrics({ register: this.registry, prefix: 'imgstreamd_' });
    streamer.on('fetch', (e) => {
      if (e.error !== undefined) {
        this.#fetchErrors.inc();
        return;
      }
      this.#fetchedBytes.inc({ kind: e.priority === 'prefetch' ? 'prefetch' : 'on_demand' }, e.compressedBytes);
      this.#latency.observe({ priority: e.priority }, e.latencyMs / 1000);
    });
    streamer.on('download-bytes', (e) => this.#fetchedBytes.inc({ kind: 'background' }, e.bytes));
    streamer.on('cache', (e) => this.#cache.inc({ result: e.hit ? 'hit' : 'miss' }));
    streamer.on('layer-streamed', () => this.#layers.inc({ decision: 'remote', reason: '' }));
    streamer.on('layer-fallback', (e) => this.#layers.inc({ decision: 'fallback', reason: e.code }));
    streamer.on('layer-complete', () => this.#complete.inc());
    prefetcher?.on('report', (e) => this.#prefetchReports.inc({ status: e.status }));
    prefetcher?.on('replayed', (e) => this.#prefetchBytes.inc(e.result.bytes));
    prefetcher?.on('replay-stats', (e) => {
      this.#prefetchReads.inc({ result: 'hit' }, e.hits);
      this.#prefetchReads.inc({ result: 'miss' }, e.misses);
    });
    prefetcher?.on('recorded', () => this.#prefetchRecorded.inc());
  }

  /** Serves `GET /metrics` on `host:port`. */
  async listen(address: string): Promise<Server> {
    const i = address.lastIndexOf(':');
    const host = address.slice(0, i).replace(/^\[|\]$/g, '');
    const port = Number(address.slice(i + 1));
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return server;
  }
}
