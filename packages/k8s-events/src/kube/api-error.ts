import { ErrorCode, ImgstreamError } from '@imgstream/core';

/**
 * Whether a failed API call is worth retrying: the server could not be reached (no status), timed
 * out, throttled us or failed internally. 4xx answers (forbidden, invalid, not found) are not.
 */
export function isRetryableStatus(status: number | undefined): boolean {
  return status === undefined || status === 408 || status === 429 || status >= 500;
}

/** The HTTP status of an `IMGSTREAM_KUBERNETES_API` error, if the server answered. */
export function apiErrorStatus(err: unknown): number | undefined {
  if (err instanceof ImgstreamError && err.code === ErrorCode.KUBERNETES_API) {
    const status = err.fields.status;
    return typeof status === 'number' ? status : undefined;
  }
  return undefined;
}

/** True for an `IMGSTREAM_KUBERNETES_API` error marked retryable. */
export function isRetryableApiError(err: unknown): boolean {
  return err instanceof ImgstreamError && err.code === ErrorCode.KUBERNETES_API && err.fields.retryable === true;
}

export function kubeApiError(operation: string, status: number | undefined, detail: string, cause?: unknown): ImgstreamError {
  const where = status === undefined ? 'could not reach the API server' : `API server answered ${status}`;
  return new ImgstreamError(ErrorCode.KUBERNETES_API, `kubernetes ${operation}: ${where}${detail ? `: ${detail}` : ''}`, {
    ...(status === undefined ? {} : { status }),
    retryable: isRetryableStatus(status),
    operation,
    cause,
  });
}
