import { ErrorCode, ImgstreamError } from '../errors.js';

/** Network error codes after which a request is retried. */
const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'IMGSTREAM_TRUNCATED_BODY',
]);

/** True for network failures, timeouts and truncated bodies: worth another attempt. */
export function isRetryableNetworkError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && RETRYABLE_CODES.has(code)) return true;
  const cause = (err as { cause?: unknown }).cause;
  return cause !== undefined && cause !== err && isRetryableNetworkError(cause);
}

/** True for timeouts (headers, body idle, connect). */
export function isTimeoutError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT';
}

/** A body that ended before the bytes it promised: retried like a reset. */
export class TruncatedBodyError extends Error {
  readonly code = 'IMGSTREAM_TRUNCATED_BODY';
  constructor(expected: number, got: number) {
    super(`response body ended after ${got} of ${expected} bytes`);
  }
}

/** Exponential backoff with jitter: a random delay in [d/2, d], d = min(max, base * 2^attempt). */
export function backoffDelayMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const d = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.round(d / 2 + (random() * d) / 2);
}

/** Parses `Retry-After` (seconds or an HTTP date) to ms, capped at `maxMs`; undefined when absent or bad. */
export function parseRetryAfterMs(value: string | string[] | undefined, maxMs: number, now: number = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || v.trim() === '') return undefined;
  let ms: number;
  if (/^\s*\d+\s*$/.test(v)) ms = Number(v) * 1000;
  else {
    const t = Date.parse(v);
    if (Number.isNaN(t)) return undefined;
    ms = t - now;
  }
  return Math.max(0, Math.min(maxMs, ms));
}

/** Resolves after `ms`, or rejects with `signal.reason` when aborted (listener removed either way). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The coded error for a request that failed every attempt. */
export function unavailable(url: string, attempts: number, cause: unknown, status?: number): ImgstreamError {
  const timeout = isTimeoutError(cause);
  const what = status !== undefined ? `HTTP ${status}` : cause instanceof Error ? cause.message : String(cause);
  return new ImgstreamError(
    timeout ? ErrorCode.TIMEOUT : ErrorCode.REGISTRY_UNAVAILABLE,
    `${timeout ? 'timed out' : 'registry unavailable'} after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${what} (${url})`,
    { url, attempts, ...(status !== undefined ? { status } : {}), ...(cause !== undefined ? { cause } : {}) },
  );
}
