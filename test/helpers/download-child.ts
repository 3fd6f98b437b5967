/**
 * TEST-ONLY child process: downloads one layer into a layer cache and reports progress on stdout
 * (`progress <bytes>`, `complete <dir>`), so a test can SIGKILL it at any point.
 * argv: <layerCacheDir> <url> <digest> <size>
 */
import { LayerCache, LayerDownloader, parseDigest } from '@imgstream/core';
import { httpStreamOpener } from './range-server.ts';

const [dir, url, digest, size] = process.argv.slice(2);
const layerCache = new LayerCache({ layerCacheDir: dir! });
await layerCache.ready();
const downloader = new LayerDownloader({ layerCache });
downloader.on('progress', (e) => process.stdout.write(`progress ${e.bytes}\n`));
const out = await downloader.download({ digest: parseDigest(digest), size: Number(size), source: httpStreamOpener(url!) });
process.stdout.write(`complete ${out}\n`);
