// The public surface of @imgstream/core: named re-exports only.
export { ErrorCode, ImgstreamError, invalidOption, isImgstreamError } from './errors.js';
export type { ImgstreamErrorFields, ImgstreamErrorOptions } from './errors.js';
export { Digester, isDigest, parseDigest, sha256Digest, verifyDigest } from './digest.js';
export type { Digest } from './digest.js';
export type { RangeReader } from './blob.js';
export { DEFAULTS } from './defaults.js';
export { channel, publish } from './diagnostics.js';
export type { BlockInfo, EntryType, Extent, FileEntry, LayerFormat, LayerIndex } from './index/model.js';
