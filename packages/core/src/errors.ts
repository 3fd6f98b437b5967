/**
 * Every error imgstream raises is an {@link ImgstreamError} with a stable `code`.
 * Users match on `code`; `docs/errors.md` lists every code and what to do about it.
 */

export const ErrorCode = Object.freeze({
  /** An option passed to a constructor or function is invalid. */
  INVALID_OPTION: 'IMGSTREAM_INVALID_OPTION',
  /** An image reference cannot be parsed. */
  INVALID_REFERENCE: 'IMGSTREAM_INVALID_REFERENCE',
  /** A digest string is malformed or uses an unsupported algorithm. */
  INVALID_DIGEST: 'IMGSTREAM_INVALID_DIGEST',
  /** Content does not match the digest it was addressed by. */
  DIGEST_MISMATCH: 'IMGSTREAM_DIGEST_MISMATCH',
  /** A manifest or index is malformed or of an unsupported media type. */
  INVALID_MANIFEST: 'IMGSTREAM_INVALID_MANIFEST',
  /** The image is a Docker schema 1 manifest, which imgstream refuses. */
  UNSUPPORTED_SCHEMA1: 'IMGSTREAM_UNSUPPORTED_SCHEMA1',
  /** A media type imgstream cannot handle. */
  UNSUPPORTED_MEDIA_TYPE: 'IMGSTREAM_UNSUPPORTED_MEDIA_TYPE',
  /** No manifest in an index matches the requested platform. */
  PLATFORM_NOT_FOUND: 'IMGSTREAM_PLATFORM_NOT_FOUND',
  /** The registry refused the credentials (401 after authenticating). */
  REGISTRY_UNAUTHORIZED: 'IMGSTREAM_REGISTRY_UNAUTHORIZED',
  /** The registry denied access (403). */
  REGISTRY_DENIED: 'IMGSTREAM_REGISTRY_DENIED',
  /** The manifest, blob or repository does not exist (404). */
  REGISTRY_NOT_FOUND: 'IMGSTREAM_REGISTRY_NOT_FOUND',
  /** The registry answered with an unexpected status or body. */
  REGISTRY_PROTOCOL: 'IMGSTREAM_REGISTRY_PROTOCOL',
  /** The registry kept failing (5xx, 429, resets) past the retry budget. */
  REGISTRY_UNAVAILABLE: 'IMGSTREAM_REGISTRY_UNAVAILABLE',
  /** A request did not complete within its timeout. */
  TIMEOUT: 'IMGSTREAM_TIMEOUT',
  /** A requested byte range lies outside the blob (416). */
  RANGE_NOT_SATISFIABLE: 'IMGSTREAM_RANGE_NOT_SATISFIABLE',
  /** A credential helper failed or returned malformed output. */
  CREDENTIAL_HELPER: 'IMGSTREAM_CREDENTIAL_HELPER',
  /** A tar stream is malformed. */
  INVALID_TAR: 'IMGSTREAM_INVALID_TAR',
  /** A layer index (eStargz TOC, zran index, file table) is malformed. */
  INVALID_INDEX: 'IMGSTREAM_INVALID_INDEX',
  /** A prefetch report is malformed, of an unknown version, or does not match the image (stale). */
  INVALID_PREFETCH_REPORT: 'IMGSTREAM_INVALID_PREFETCH_REPORT',
  /** A size or ratio limit was exceeded (oversized TOC, decompression bomb). */
  LIMIT_EXCEEDED: 'IMGSTREAM_LIMIT_EXCEEDED',
  /** A compressed stream is corrupt. */
  CORRUPT_DATA: 'IMGSTREAM_CORRUPT_DATA',
  /** The layer has no seekable index, so it cannot be streamed. */
  NOT_STREAMABLE: 'IMGSTREAM_NOT_STREAMABLE',
  /** A path does not exist in a layer or image. */
  NOT_FOUND: 'IMGSTREAM_NOT_FOUND',
  /** The object was used after close(). */
  CLOSED: 'IMGSTREAM_CLOSED',
  /** The disk ran out of space. */
  DISK_FULL: 'IMGSTREAM_DISK_FULL',
  /** FUSE cannot be used here: fuse-native, libfuse2 or /dev/fuse is missing. */
  FUSE_UNAVAILABLE: 'IMGSTREAM_FUSE_UNAVAILABLE',
  /** A filesystem could not be mounted or unmounted (mount point busy, missing, or the kernel refused). */
  MOUNT_FAILED: 'IMGSTREAM_MOUNT_FAILED',
  /** No snapshot has the given key or name. */
  SNAPSHOT_NOT_FOUND: 'IMGSTREAM_SNAPSHOT_NOT_FOUND',
  /** A snapshot with the given key or name already exists (also: a remote layer is already there). */
  SNAPSHOT_ALREADY_EXISTS: 'IMGSTREAM_SNAPSHOT_ALREADY_EXISTS',
  /** The snapshot still has children, so it cannot be removed. */
  SNAPSHOT_HAS_CHILDREN: 'IMGSTREAM_SNAPSHOT_HAS_CHILDREN',
  /** The operation needs another kind of snapshot (commit of a non-active one, mounts of a committed one). */
  SNAPSHOT_WRONG_KIND: 'IMGSTREAM_SNAPSHOT_WRONG_KIND',
  /** A snapshot request is malformed: empty key, non-committed parent, bad label, unknown field path, bad filter. */
  SNAPSHOT_INVALID_ARGUMENT: 'IMGSTREAM_SNAPSHOT_INVALID_ARGUMENT',
  /** The snapshot metadata file cannot be read or does not describe a valid state. */
  SNAPSHOT_METADATA_CORRUPT: 'IMGSTREAM_SNAPSHOT_METADATA_CORRUPT',
  /** The optional peer `@kubernetes/client-node` (~1.4) is not installed. */
  KUBERNETES_CLIENT_MISSING: 'IMGSTREAM_KUBERNETES_CLIENT_MISSING',
  /** Kubernetes credentials (in-cluster service account or kubeconfig) cannot be loaded. */
  KUBERNETES_CONFIG: 'IMGSTREAM_KUBERNETES_CONFIG',
  /** The Kubernetes API server refused or failed a request. */
  KUBERNETES_API: 'IMGSTREAM_KUBERNETES_API',
  /** A layer entry would be written outside the layer directory (`..`, absolute path, through a symlink). */
  UNSAFE_PATH: 'IMGSTREAM_UNSAFE_PATH',
  /** A helper program (mknod, setfattr, sync) or a layer download's unpack worker thread failed or is missing. */
  TOOL_FAILED: 'IMGSTREAM_TOOL_FAILED',
});

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Structured fields an error may carry. */
export interface ImgstreamErrorFields {
  digest?: string;
  ref?: string;
  range?: { offset: number; length: number };
  status?: number;
  url?: string;
  option?: string;
  path?: string;
  expected?: string;
  actual?: string;
  [key: string]: unknown;
}

export interface ImgstreamErrorOptions extends ImgstreamErrorFields {
  cause?: unknown;
}

/** Base class of every error imgstream raises. */
export class ImgstreamError extends Error {
  override name = 'ImgstreamError';
  readonly code: ErrorCode;
  readonly fields: Readonly<ImgstreamErrorFields>;

  constructor(code: ErrorCode, message: string, options: ImgstreamErrorOptions = {}) {
    const { cause, ...fields } = options;
    super(message, cause === undefined ? undefined : { cause });
    this.code = code;
    this.fields = Object.freeze(fields);
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      ...this.fields,
      ...(this.cause !== undefined ? { cause: serialiseCause(this.cause) } : {}),
    };
  }
}

function serialiseCause(cause: unknown): unknown {
  if (cause instanceof ImgstreamError) return cause.toJSON();
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return { name: cause.name, message: cause.message, ...(code !== undefined ? { code } : {}) };
  }
  return String(cause);
}

/** True when `err` is an ImgstreamError, optionally of the given code. */
export function isImgstreamError(err: unknown, code?: ErrorCode): err is ImgstreamError {
  return err instanceof ImgstreamError && (code === undefined || err.code === code);
}

/** Throws IMGSTREAM_INVALID_OPTION naming the option. */
export function invalidOption(option: string, message: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.INVALID_OPTION, `invalid option ${option}: ${message}`, { option });
}
