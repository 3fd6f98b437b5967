import { ErrorCode } from '@imgstream/core';

/** Why a layer (or a whole image) was pulled in full instead of streamed. */
export type FallbackReason =
  /** The layer has no seekable index (not eStargz, no external zran index, or the index is unusable). */
  | 'no-index'
  /** The layer's media type cannot be streamed (e.g. zstd, encrypted, foreign). */
  | 'unsupported-media-type'
  /** The image is a Docker schema 1 manifest. */
  | 'schema1'
  /** The registry refused imgstream's credentials. */
  | 'registry-auth'
  /** Fetching from the registry kept failing past the retry budget. */
  | 'fetch-failed'
  /** Any other failure (an ImgstreamError code not in the table). */
  | 'other';

/** Kubernetes Event reasons this package writes. */
export const EventReason = Object.freeze({
  /** Normal: an image is backed by image streaming (GKE's reason). */
  IMAGE_STREAMING: 'ImageStreaming',
  NO_INDEX: 'StreamingFallbackNoIndex',
  UNSUPPORTED_MEDIA_TYPE: 'StreamingFallbackMediaType',
  SCHEMA1: 'StreamingFallbackSchema1',
  REGISTRY_AUTH: 'StreamingFallbackAuth',
  FETCH_FAILED: 'StreamingFallbackFetchFailed',
  OTHER: 'StreamingFallbackError',
});
export type EventReason = (typeof EventReason)[keyof typeof EventReason];

interface FallbackRow {
  /** The Warning event's reason. */
  readonly eventReason: EventReason;
  /** Why, as the tail of the event message. */
  readonly because: string;
  /** ImgstreamError codes that mean this cause. */
  readonly codes: readonly ErrorCode[];
}

/**
 * THE translation table: fallback cause -> Warning event reason, and the core error codes that
 * mean that cause. Every other mapping in this package is derived from it.
 */
export const FALLBACK_TABLE: Readonly<Record<FallbackReason, FallbackRow>> = Object.freeze({
  'no-index': {
    eventReason: EventReason.NO_INDEX,
    because: 'it has no seekable index (build one with `imgstream index`)',
    codes: [ErrorCode.NOT_STREAMABLE, ErrorCode.INVALID_INDEX],
  },
  'unsupported-media-type': {
    eventReason: EventReason.UNSUPPORTED_MEDIA_TYPE,
    because: 'its media type cannot be streamed',
    codes: [ErrorCode.UNSUPPORTED_MEDIA_TYPE],
  },
  schema1: {
    eventReason: EventReason.SCHEMA1,
    because: 'it is a Docker schema 1 image',
    codes: [ErrorCode.UNSUPPORTED_SCHEMA1],
  },
  'registry-auth': {
    eventReason: EventReason.REGISTRY_AUTH,
    because: 'the registry refused the credentials',
    codes: [ErrorCode.REGISTRY_UNAUTHORIZED, ErrorCode.REGISTRY_DENIED, ErrorCode.CREDENTIAL_HELPER],
  },
  'fetch-failed': {
    eventReason: EventReason.FETCH_FAILED,
    because: 'fetching from the registry failed past the retry budget',
    codes: [ErrorCode.REGISTRY_UNAVAILABLE, ErrorCode.TIMEOUT, ErrorCode.REGISTRY_PROTOCOL, ErrorCode.REGISTRY_NOT_FOUND],
  },
  other: {
    eventReason: EventReason.OTHER,
    because: 'streaming failed',
    codes: [],
  },
});

export const FALLBACK_REASONS = Object.freeze(Object.keys(FALLBACK_TABLE) as FallbackReason[]);

const byCode: ReadonlyMap<string, FallbackReason> = new Map(
  FALLBACK_REASONS.flatMap((reason) => FALLBACK_TABLE[reason].codes.map((code) => [code, reason] as const)),
);

/** The fallback cause an ImgstreamError code means; `other` for codes outside the table. */
export function fallbackReasonForCode(code: string): FallbackReason {
  return byCode.get(code) ?? 'other';
}

/** The Warning event reason for a fallback cause or an ImgstreamError code. */
export function eventReasonFor(input: { reason: FallbackReason } | { code: string }): EventReason {
  const reason = 'reason' in input ? input.reason : fallbackReasonForCode(input.code);
  return FALLBACK_TABLE[reason].eventReason;
}

export function isFallbackReason(value: unknown): value is FallbackReason {
  return typeof value === 'string' && Object.hasOwn(FALLBACK_TABLE, value);
}
