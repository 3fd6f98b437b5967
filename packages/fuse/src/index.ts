// The public surface of @imgstream/fuse: named re-exports only.
export { ImgstreamFs } from './imgstream-fs.js';
export type { ImgstreamFsOptions } from './imgstream-fs.js';
export type { AddLayerOptions, LayerContent } from './content.js';
export { fetcherLayerContent } from './fetcher-content.js';
export { PageCacheWarmer, type PageCacheWarmerOptions, type WarmStats } from './page-cache-warmer.js';
export { Errno, errnoOf } from './errno.js';
export { escapeImageRef, imageDirName, layerDirName, parseLayerDirName, unescapeImageRef } from './names.js';
export { OPAQUE_XATTR, layerNeedsXattrs } from './layer-view.js';
export { checkFuseAvailable } from './fuse-native.js';
