import type { BlockFetcher, FetchLayer } from '@imgstream/core';
import type { LayerContent } from './content.js';

/**
 * The {@link LayerContent} of a layer read through core's {@link BlockFetcher}: file bytes come
 * from the fetcher (content cache, range requests to the blob, the local layer cache once the
 * layer is complete), as foreground reads.
 */
export function fetcherLayerContent(fetcher: BlockFetcher, layer: FetchLayer): LayerContent {
  return {
    index: layer.index,
    read: (entry, offset, length, options) => fetcher.read(layer, entry, offset, length, { signal: options.signal, priority: 'foreground' }),
    readInto: (entry, offset, target, options) => fetcher.readInto(layer, entry, offset, target, { signal: options.signal, priority: 'foreground' }),
    readIntoNow: (entry, offset, target) => fetcher.readPinned(layer, entry, offset, target),
  };
}
