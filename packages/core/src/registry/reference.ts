import { parseDigest, type Digest } from '../digest.js';
import { ErrorCode, ImgstreamError } from '../errors.js';

/** The registry name Docker Hub images are normalised to. */
export const DOCKER_HUB_REGISTRY = 'docker.io';
/** The host Docker Hub's registry API is served from. */
export const DOCKER_HUB_ENDPOINT = 'registry-1.docker.io';

/** A parsed, normalised image reference: `registry/repository[:tag][@digest]`. */
export interface ImageReference {
  /** Registry host with optional port, e.g. `docker.io`, `localhost:5000`, `[::1]:5000`. */
  readonly registry: string;
  /** Repository path, e.g. `library/ubuntu`. */
  readonly repository: string;
  /** Tag; `latest` when the reference had neither tag nor digest. */
  readonly tag: string | undefined;
  /** Digest, when the reference pins one. */
  readonly digest: Digest | undefined;
}

const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const COMPONENT_RE = new RegExp(`^${COMPONENT}$`);
const DOMAIN_LABEL = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_RE = new RegExp(`^(?:${DOMAIN_LABEL}(?:\\.${DOMAIN_LABEL})*|\\[[a-fA-F0-9:.]+\\])(?::[0-9]{1,5})?$`);
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const MAX_NAME_LENGTH = 255;

function invalid(input: string, why: string): ImgstreamError {
  return new ImgstreamError(ErrorCode.INVALID_REFERENCE, `invalid image reference ${JSON.stringify(input.slice(0, 300))}: ${why}`, {
    ref: input.slice(0, 300),
  });
}

/**
 * Parses an image reference the way Docker does: `ubuntu` is `docker.io/library/ubuntu:latest`,
 * a first path component with a `.` or `:` or equal to `localhost` is a registry host, a tag
 * follows `:` and a digest follows `@` (both may be present). Throws IMGSTREAM_INVALID_REFERENCE.
 */
export function parseReference(input: string): ImageReference {
  if (typeof input !== 'string') throw invalid(String(input), 'not a string');
  if (input.length === 0) throw invalid(input, 'empty');
  if (input.length > 4096) throw invalid(input, 'too long');
  if (/\s/.test(input)) throw invalid(input, 'contains whitespace');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(input)) throw invalid(input, 'a reference has no URL scheme');

  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    const digestText = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      digest = parseDigest(digestText, 'reference digest');
    } catch (err) {
      throw new ImgstreamError(ErrorCode.INVALID_REFERENCE, `invalid image reference ${JSON.stringify(input)}: ${(err as Error).message}`, {
        ref: input,
        cause: err,
      });
    }
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const lastColon = rest.lastIndexOf(':');
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG_RE.test(tag)) throw invalid(input, `malformed tag ${JSON.stringify(tag)}`);
  }
  if (rest.length === 0) throw invalid(input, 'missing repository name');

  let registry = DOCKER_HUB_REGISTRY;
  let path = rest;
  const firstSlash = rest.indexOf('/');
  if (firstSlash !== -1) {
    const first = rest.slice(0, firstSlash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[') || first !== first.toLowerCase()) {
      registry = first;
      path = rest.slice(firstSlash + 1);
      if (!DOMAIN_RE.test(registry)) throw invalid(input, `malformed registry host ${JSON.stringify(registry)}`);
      const port = /:([0-9]+)$/.exec(registry)?.[1];
      if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) throw invalid(input, `port out of range in ${JSON.stringify(registry)}`);
    }
  }
  if (registry === 'index.docker.io' || registry === DOCKER_HUB_ENDPOINT) registry = DOCKER_HUB_REGISTRY;
  if (path.length === 0) throw invalid(input, 'missing repository name');
  const components = path.split('/');
  for (const c of components) {
    if (!COMPONENT_RE.test(c)) {
      const why = c !== c.toLowerCase() ? 'repository names must be lowercase' : `malformed path component ${JSON.stringify(c)}`;
      throw invalid(input, why);
    }
  }
  if (registry === DOCKER_HUB_REGISTRY && components.length === 1) path = `library/${path}`;
  if (registry.length + 1 + path.length > MAX_NAME_LENGTH) throw invalid(input, `name longer than ${MAX_NAME_LENGTH} characters`);
  if (tag === undefined && digest === undefined) tag = 'latest';
  return Object.freeze({ registry, repository: path, tag, digest });
}

/** The canonical string of a reference: `registry/repository[:tag][@digest]`. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** The same repository addressed by `digest` (the tag is dropped). */
export function withDigest(ref: ImageReference, digest: Digest): ImageReference {
  return Object.freeze({ registry: ref.registry, repository: ref.repository, tag: undefined, digest });
}

/** The same repository addressed by `tag` (the digest is dropped). */
export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!TAG_RE.test(tag)) throw invalid(tag, `malformed tag ${JSON.stringify(tag)}`);
  return Object.freeze({ registry: ref.registry, repository: ref.repository, tag, digest: undefined });
}

/** The host that serves the registry API for `registry` (Docker Hub's is `registry-1.docker.io`). */
export function registryEndpointHost(registry: string): string {
  return registry === DOCKER_HUB_REGISTRY ? DOCKER_HUB_ENDPOINT : registry;
}

/** True when `host` (host[:port]) names a loopback address. */
export function isLoopbackHost(host: string): boolean {
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:[0-9]+$/, '');
  return name === 'localhost' || name === '::1' || /^127(?:\.[0-9]{1,3}){3}$/.test(name);
}
