import { FALLBACK_TABLE, type FallbackReason } from './reasons.js';

/** Kubernetes does not limit core/v1 Event messages, but events.k8s.io caps `note` at 1 KiB; stay under it. */
export const MAX_MESSAGE_LENGTH = 1024;

export function imageStreamingMessage(image: string, manifestDigest: string | undefined, layers: number | undefined): string {
  const facts: string[] = [];
  if (manifestDigest !== undefined && !image.includes('@')) facts.push(`manifest ${shortDigest(manifestDigest)}`);
  if (layers !== undefined) facts.push(`${layers} ${layers === 1 ? 'layer' : 'layers'} streamed`);
  const tail = facts.length > 0 ? ` (${facts.join(', ')})` : '';
  return clip(`Image ${image} is backed by image streaming${tail}.`);
}

export function fallbackMessage(
  reason: FallbackReason,
  image: string,
  layerDigest: string | undefined,
  code: string | undefined,
  detail: string | undefined,
): string {
  const subject = layerDigest !== undefined ? `Layer ${layerDigest} of image ${image}` : `Image ${image}`;
  const codeText = code !== undefined ? ` [${code}]` : '';
  const detailText = detail !== undefined && detail !== '' ? `: ${detail}` : '';
  return clip(`${subject} is pulled in full: ${FALLBACK_TABLE[reason].because}${detailText}${codeText}.`);
}

function shortDigest(digest: string): string {
  const colon = digest.indexOf(':');
  return colon === -1 ? digest.slice(0, 12) : digest.slice(0, colon + 13);
}

function clip(message: string): string {
  return message.length <= MAX_MESSAGE_LENGTH ? message : `${message.slice(0, MAX_MESSAGE_LENGTH - 1)}…`;
}
