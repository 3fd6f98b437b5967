/**
 * TEST-ONLY child process: downloads one layer into a layer cache and reports progress on stdout
 * (`progress <bytes>`, `complete <dir>`), so a test can SIGKILL it at any point.
 * argv: <layerCacheDir> <url> <digest> <size> [close-at-progress=<n>]
 * With `close-at-progress=<n>` it calls `close()` at the n-th progress event, prints `closed` when that
 * resolves and `rejected <code>` for the download, and then ends without process.exit: the process
 * exits only if close() left nothing running (no worker thread, socket or timer).
 */
import { LayerCache, LayerDownloader, parseDigest } from '@imgstream/core';
import { httpStreamOpener } from './range-server.ts';

const [dir, url, digest, size, mode] = process.argv.slice(2);
const closeAt = mode?.startsWith('close-at-progress=') ? Number(mode.slice('close-at-progress='.length)) : undefined;
const layerCache = new LayerCache({ layerCacheDir: dir! });
await layerCache.ready();
const downloader = new LayerDownloader({ layerCache });
let seen = 0;
downloader.on('progress', (e) => {
  process.stdout.write(`progress ${e.bytes}\n`);
  if (++seen === closeAt) void downloader.close().then(() => process.stdout.write('closed\n'));
});
const download = downloader.download({ digest: parseDigest(digest), size: Number(size), source: httpStreamOpener(url!) });
if (closeAt === undefined) {
  process.stdout.write(`complete ${await download}\n`);
} else {
  await download.then(
    () => process.stdout.write('completed before close\n'),
    (err: { code?: string }) => process.stdout.write(`rejected ${err.code}\n`),
  );
}
