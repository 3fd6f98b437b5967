// The public surface of @imgstream/core: named re-exports only.
export { ErrorCode, ImgstreamError, invalidOption, isImgstreamError } from './errors.js';
export type { ImgstreamErrorFields, ImgstreamErrorOptions } from './errors.js';
export { Digester, isDigest, parseDigest, sha256Digest, verifyDigest } from './digest.js';
export type { Digest } from './digest.js';
export type { RangeReader } from './blob.js';
export type { BlockInfo, EntryType, Extent, FileEntry, LayerFormat, LayerIndex } from './index/model.js';
export { channel, publish } from './diagnostics.js';
export { defaults } from './defaults.js';
export type { Defaults } from './defaults.js';
export {
  parseReference,
  formatReference,
  withDigest,
  withTag,
  registryEndpointHost,
  isLoopbackHost,
  DOCKER_HUB_REGISTRY,
  DOCKER_HUB_ENDPOINT,
} from './registry/reference.js';
export type { ImageReference } from './registry/reference.js';
export { MediaType, MANIFEST_MEDIA_TYPES, INDEX_MEDIA_TYPES } from './registry/media-types.js';
export { parseManifest, parseDescriptor, selectPlatform } from './registry/manifest.js';
export type { Descriptor, ImageManifest, ImageIndex, ManifestDocument } from './registry/manifest.js';
export { hostPlatform, parsePlatform, formatPlatform, normalizePlatform, platformFromNode, platformScore } from './registry/platform.js';
export type { Platform } from './registry/platform.js';
export { parseWwwAuthenticate } from './registry/www-authenticate.js';
export type { AuthChallenge } from './registry/www-authenticate.js';
export { DockerConfigCredentials, staticCredentials, chainCredentials, runCredentialHelper } from './registry/credentials.js';
export type { Credential, CredentialProvider, DockerConfigCredentialsOptions } from './registry/credentials.js';
export { RegistryClient, isIndexMediaType } from './registry/client.js';
export type {
  RegistryClientOptions,
  RegistryMirror,
  CallOptions,
  FetchedManifest,
  ResolvedImage,
  ResolveImageOptions,
  PushManifestOptions,
  ReferrersOptions,
} from './registry/client.js';
export { RegistryBlobReader } from './registry/blob-reader.js';
export { backoffDelayMs, parseRetryAfterMs } from './registry/retry.js';
export { parseHostsToml, loadHostsDir } from './registry/hosts-toml.js';
export type { HostsConfig } from './registry/hosts-toml.js';
