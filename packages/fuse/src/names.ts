import { ErrorCode, ImgstreamError, parseDigest } from '@imgstream/core';
import type { Digest } from '@imgstream/core';

/**
 * Names used inside the mount. Digests appear as `sha256=<hex>` and image references are
 * percent-encoded, so no name contains `/`, `:` or `,` (overlayfs' lowerdir separators).
 */

/** `sha256:<hex>` → `sha256=<hex>`, the name of a layer directory under `layers/`. */
export function layerDirName(digest: Digest): string {
  return digest.replace(':', '=');
}

/** `sha256=<hex>` → `sha256:<hex>`, or undefined when `name` is not a layer directory name. */
export function parseLayerDirName(name: string): Digest | undefined {
  const i = name.indexOf('=');
  if (i < 0) return undefined;
  try {
    return parseDigest(`${name.slice(0, i)}:${name.slice(i + 1)}`);
  } catch {
    return undefined;
  }
}

/** Percent-encodes everything but `A-Za-z0-9._-` (`docker.io/library/busybox:1` → `docker.io%2Flibrary%2Fbusybox%3A1`). */
export function escapeImageRef(ref: string): string {
  return encodeURIComponent(ref).replace(/[!'()*~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** The inverse of {@link escapeImageRef}. */
export function unescapeImageRef(escaped: string): string {
  try {
    return decodeURIComponent(escaped);
  } catch (cause) {
    throw new ImgstreamError(ErrorCode.INVALID_REFERENCE, `not an escaped image reference: ${escaped}`, { cause });
  }
}

/** The name of an image directory under `images/`: `<escaped-ref>@sha256=<hex>`. */
export function imageDirName(ref: string, manifestDigest: Digest): string {
  return `${escapeImageRef(ref)}@${layerDirName(manifestDigest)}`;
}
