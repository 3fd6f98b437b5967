import { defineConfig } from 'tsup';

export default defineConfig({
  // unpack-worker: the entry of the layer downloader's worker threads, loaded by URL next to the chunks
  entry: { index: 'src/index.ts', experimental: 'src/experimental.ts', 'unpack-worker': 'src/download/unpack-worker.ts' },
  format: ['esm'],
  target: 'node20',
  dts: { entry: { index: 'src/index.ts', experimental: 'src/experimental.ts' } },
  sourcemap: true,
  clean: true,
});
