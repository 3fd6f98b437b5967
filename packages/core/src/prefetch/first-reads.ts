import type { Digest } from '../digest.js';
import type { BlockFetcher, CacheLookupEvent } from '../fetch/block-fetcher.js';

/**
 * Calls `first` on the first foreground cache lookup of each block of `layers` through `fetcher`
 * (a container's first read of the block: what a replay counts as a hit or a miss). Returns the
 * function that stops watching.
 */
export function watchFirstReads(fetcher: BlockFetcher, layers: { has(digest: Digest): boolean }, first: (e: CacheLookupEvent, key: string) => void): () => void {
  const seen = new Set<string>();
  const onCache = (e: CacheLookupEvent): void => {
    if (e.priority !== 'foreground' || !layers.has(e.layerDigest)) return;
    const key = `${e.layerDigest}:${e.block}`;
    if (seen.has(key)) return;
    seen.add(key);
    first(e, key);
  };
  fetcher.on('cache', onCache);
  return () => fetcher.off('cache', onCache);
}
