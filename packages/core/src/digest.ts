import { createHash, type Hash } from 'node:crypto';
import { ErrorCode, ImgstreamError } from './errors.js';

/** An OCI content digest, `sha256:<64 hex>` (the only algorithm imgstream accepts). */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

/** True when `value` is a well-formed sha256 digest. */
export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && DIGEST_RE.test(value);
}

/** Returns `value` as a Digest or throws IMGSTREAM_INVALID_DIGEST. */
export function parseDigest(value: unknown, context = 'digest'): Digest {
  if (isDigest(value)) return value;
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 100)) : typeof value;
  if (typeof value === 'string' && /^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(value) && !value.startsWith('sha256:')) {
    throw new ImgstreamError(ErrorCode.INVALID_DIGEST, `${context}: unsupported digest algorithm in ${shown} (only sha256 is supported)`, { digest: value });
  }
  throw new ImgstreamError(ErrorCode.INVALID_DIGEST, `${context}: malformed digest ${shown}`, { digest: typeof value === 'string' ? value : undefined });
}

/** sha256 digest of a buffer. */
export function sha256Digest(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** The hex part of a digest. */
export function digestHex(digest: Digest): string {
  return digest.slice('sha256:'.length);
}

/** Throws IMGSTREAM_DIGEST_MISMATCH unless `data` hashes to `expected`. */
export function verifyDigest(data: Uint8Array, expected: Digest, what = 'content'): void {
  const actual = sha256Digest(data);
  if (actual !== expected) throw digestMismatch(expected, actual, what);
}

export function digestMismatch(expected: Digest, actual: string, what = 'content'): ImgstreamError {
  return new ImgstreamError(ErrorCode.DIGEST_MISMATCH, `${what} does not match its digest: expected ${expected}, got ${actual}`, {
    digest: expected,
    expected,
    actual,
  });
}

/** An incremental sha256 digester. */
export class Digester {
  readonly #hash: Hash = createHash('sha256');
  #bytes = 0;

  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.#bytes += chunk.byteLength;
  }

  get bytes(): number {
    return this.#bytes;
  }

  digest(): Digest {
    return `sha256:${this.#hash.digest('hex')}`;
  }
}
