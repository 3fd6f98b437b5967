import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/main.ts', 'src/index.ts'],
  format: ['esm'],
  target: 'node20',
  sourcemap: true,
  clean: true,
  dts: { entry: 'src/index.ts' },
  banner: { js: '#!/usr/bin/env node' },
});
