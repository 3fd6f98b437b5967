import { constants } from 'node:os';
import { ErrorCode, isImgstreamError } from '@imgstream/core';

/** The errno values the filesystem answers with (Linux numbers, positive). */
export const Errno = Object.freeze({
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EACCES: 13,
  EEXIST: 17,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENOSYS: 38,
  ENODATA: 61,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
});

/**
 * The one table from core error codes to the errno a FUSE request fails with. Codes not listed
 * (and errors without a code) map to EIO: the kernel and the application learn that the data
 * could not be read; the reason is published on the `imgstream:fuse:read-error` channel.
 */
const ERRNO_BY_CODE: Readonly<Partial<Record<ErrorCode, number>>> = Object.freeze({
  [ErrorCode.NOT_FOUND]: Errno.ENOENT,
  [ErrorCode.INVALID_OPTION]: Errno.EINVAL,
  [ErrorCode.DISK_FULL]: Errno.ENOSPC,
  [ErrorCode.TIMEOUT]: Errno.EIO,
  [ErrorCode.DIGEST_MISMATCH]: Errno.EIO,
  [ErrorCode.CORRUPT_DATA]: Errno.EIO,
  [ErrorCode.INVALID_INDEX]: Errno.EIO,
  [ErrorCode.LIMIT_EXCEEDED]: Errno.EIO,
  [ErrorCode.RANGE_NOT_SATISFIABLE]: Errno.EIO,
  [ErrorCode.REGISTRY_UNAUTHORIZED]: Errno.EIO,
  [ErrorCode.REGISTRY_DENIED]: Errno.EIO,
  [ErrorCode.REGISTRY_NOT_FOUND]: Errno.EIO,
  [ErrorCode.REGISTRY_PROTOCOL]: Errno.EIO,
  [ErrorCode.REGISTRY_UNAVAILABLE]: Errno.EIO,
  [ErrorCode.NOT_STREAMABLE]: Errno.EIO,
  [ErrorCode.CLOSED]: Errno.EIO,
});

/** The positive errno for an error thrown by a content source (or by the filesystem itself). */
export function errnoOf(err: unknown): number {
  if (isImgstreamError(err)) return ERRNO_BY_CODE[err.code] ?? Errno.EIO;
  // A local file (the layer cache) failing with a system error keeps its errno.
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('E')) {
    const n = (constants.errno as Record<string, number | undefined>)[code];
    if (n !== undefined) return n;
  }
  return Errno.EIO;
}
