/**
 * The messages between a LayerDownloader and its unpack worker (`unpack-worker.ts`), and how an
 * error crosses the thread boundary: structured clone keeps neither the class nor the `code` of an
 * error, so errors travel as data and are rebuilt (an ImgstreamError with the same code, message,
 * fields and cause) on the downloader's side.
 */
import type { Digest } from '../digest.js';
import { ImgstreamError, type ErrorCode } from '../errors.js';
import type { LayerBlobUnpackResult } from './unpack-pipeline.js';

/** `workerData` of an unpack worker: what to verify and where to unpack. */
export interface UnpackWorkerData {
  readonly digest: Digest;
  readonly diffId?: Digest;
  readonly root: string;
  readonly scratchDir: string;
}

/** Downloader → worker. */
export type ToUnpackWorker =
  /** The next compressed bytes of the blob: the first `byteLength` bytes of `data` (transferred; the worker copies them and sends `data` back). */
  | { readonly type: 'chunk'; readonly data: ArrayBuffer; readonly byteLength: number }
  /** The blob has no more bytes. */
  | { readonly type: 'end' }
  /** Stop: the worker aborts the unpack, waits for its file operations and answers with an error. */
  | { readonly type: 'abort' };

/** Worker → downloader. */
export type FromUnpackWorker =
  /** A chunk's buffer, back for reuse (transferred): the downloader's thread copies into warm memory instead of faulting in fresh pages. */
  | { readonly type: 'buffer'; readonly data: ArrayBuffer }
  /** The worker's pipeline took `bytes` of the chunks sent: the downloader may send more. */
  | { readonly type: 'ack'; readonly bytes: number }
  | { readonly type: 'done'; readonly result: LayerBlobUnpackResult }
  | { readonly type: 'error'; readonly error: SerialisedError };

/** An error as plain, structured-cloneable data. */
export type SerialisedError =
  | { readonly kind: 'imgstream'; readonly json: Record<string, unknown>; readonly stack?: string }
  | { readonly kind: 'error'; readonly name: string; readonly message: string; readonly props: Record<string, unknown>; readonly stack?: string }
  | { readonly kind: 'value'; readonly value: string };

/** Properties of Node's system errors that callers match on (`code` for ENOSPC, Z_DATA_ERROR, …). */
const ERROR_PROPS = ['code', 'errno', 'syscall', 'path', 'dest'] as const;

export function serialiseError(err: unknown): SerialisedError {
  if (err instanceof ImgstreamError) {
    // toJSON() is code, message, fields and the cause as data; a field that structured clone
    // cannot copy (a function) is dropped by the JSON round trip
    const json = err.toJSON();
    return { kind: 'imgstream', json: cloneable(json) ? json : (JSON.parse(JSON.stringify(json)) as Record<string, unknown>), ...stackOf(err) };
  }
  if (err instanceof Error) {
    const props: Record<string, unknown> = {};
    for (const key of ERROR_PROPS) {
      const value = (err as unknown as Record<string, unknown>)[key];
      if (typeof value === 'string' || typeof value === 'number') props[key] = value;
    }
    return { kind: 'error', name: err.name, message: err.message, props, ...stackOf(err) };
  }
  return { kind: 'value', value: String(err) };
}

export function deserialiseError(s: SerialisedError): unknown {
  let err: Error;
  switch (s.kind) {
    case 'value':
      return new Error(s.value);
    case 'imgstream':
      err = fromJSON(s.json);
      break;
    case 'error':
      err = Object.assign(new Error(s.message), s.props);
      err.name = s.name;
      break;
  }
  if (s.stack !== undefined) err.stack = s.stack;
  return err;
}

/** Rebuilds an ImgstreamError (and an ImgstreamError cause) from its toJSON() form. */
function fromJSON(json: Record<string, unknown>): ImgstreamError {
  const { name: _name, code, message, cause, ...fields } = json;
  return new ImgstreamError(code as ErrorCode, String(message), { ...fields, ...(cause !== undefined ? { cause: causeFromJSON(cause) } : {}) });
}

function causeFromJSON(cause: unknown): unknown {
  if (typeof cause !== 'object' || cause === null) return cause;
  const c = cause as Record<string, unknown>;
  if (c.name === 'ImgstreamError' && typeof c.code === 'string') return fromJSON(c);
  const { name, message, ...props } = c;
  const err = Object.assign(new Error(String(message)), props);
  if (typeof name === 'string') err.name = name;
  return err;
}

function stackOf(err: Error): { stack?: string } {
  return typeof err.stack === 'string' ? { stack: err.stack } : {};
}

function cloneable(value: unknown): boolean {
  try {
    structuredClone(value);
    return true;
  } catch {
    return false;
  }
}
