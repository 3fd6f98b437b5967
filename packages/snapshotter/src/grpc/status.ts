import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { ErrorCode, isImgstreamError } from '@imgstream/core';

/**
 * The one table from imgstream error codes to the gRPC status containerd's proxy client expects
 * (it turns NotFound, AlreadyExists, FailedPrecondition, InvalidArgument... back into its own
 * error classes). Codes not listed become UNKNOWN.
 */
export const grpcStatusByErrorCode: Readonly<Partial<Record<ErrorCode, status>>> = Object.freeze({
  [ErrorCode.SNAPSHOT_NOT_FOUND]: status.NOT_FOUND,
  [ErrorCode.SNAPSHOT_ALREADY_EXISTS]: status.ALREADY_EXISTS,
  [ErrorCode.SNAPSHOT_HAS_CHILDREN]: status.FAILED_PRECONDITION,
  [ErrorCode.SNAPSHOT_WRONG_KIND]: status.FAILED_PRECONDITION,
  [ErrorCode.SNAPSHOT_INVALID_ARGUMENT]: status.INVALID_ARGUMENT,
  [ErrorCode.SNAPSHOT_METADATA_CORRUPT]: status.INTERNAL,
  [ErrorCode.INVALID_OPTION]: status.INVALID_ARGUMENT,
  [ErrorCode.CLOSED]: status.UNAVAILABLE,
  [ErrorCode.DISK_FULL]: status.RESOURCE_EXHAUSTED,
  [ErrorCode.TIMEOUT]: status.DEADLINE_EXCEEDED,
});

const errnoStatus: Readonly<Record<string, status>> = Object.freeze({
  ENOSPC: status.RESOURCE_EXHAUSTED,
  EDQUOT: status.RESOURCE_EXHAUSTED,
});

/** Translates anything a handler threw into a gRPC error; the imgstream code travels as metadata. */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const metadata = new Metadata();
  if (isImgstreamError(err)) {
    metadata.set('imgstream-error-code', err.code);
    return { code: grpcStatusByErrorCode[err.code] ?? status.UNKNOWN, details: err.message, metadata };
  }
  if (err instanceof Error && err.name === 'AbortError') return { code: status.CANCELLED, details: err.message, metadata };
  const errno = (err as { code?: unknown } | null)?.code;
  const code = typeof errno === 'string' ? (errnoStatus[errno] ?? status.UNKNOWN) : status.UNKNOWN;
  return { code, details: err instanceof Error ? err.message : String(err), metadata };
}
