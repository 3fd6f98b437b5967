import { access, constants } from 'node:fs/promises';
import { ErrorCode, ImgstreamError } from '@imgstream/core';

/**
 * The part of fuse-native 2.2.6 (an optional peer dependency, CommonJS, no types) that the
 * filesystem uses. Callbacks take a negative errno or 0 (or a byte count for reads).
 */
export type FuseCallback = (result: number, ...values: unknown[]) => void;

export type FuseOps = Record<string, (...args: never[]) => void>;

export interface FuseInstance {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}

export interface FuseConstructor {
  new (mountPoint: string, ops: FuseOps, options: Record<string, unknown>): FuseInstance;
  unmount(mountPoint: string, cb: (err: Error | null) => void): void;
}

/** Signal function fuse-native hands to its `_op_*` handlers: result, then the op's values. */
export type FuseSignal = (result: number, ...values: unknown[]) => void;

let loaded: Promise<FuseConstructor> | undefined;

/**
 * Loads fuse-native (and through it libfuse2) once. Rejects with IMGSTREAM_FUSE_UNAVAILABLE when
 * either cannot be loaded or /dev/fuse is missing.
 */
export function loadFuseNative(): Promise<FuseConstructor> {
  loaded ??= load();
  return loaded;
}

async function load(): Promise<FuseConstructor> {
  let mod: unknown;
  try {
    // a variable specifier: fuse-native is an optional peer, resolved only at run time
    const specifier = 'fuse-native';
    mod = (await import(specifier)) as unknown;
  } catch (cause) {
    loaded = undefined;
    throw new ImgstreamError(
      ErrorCode.FUSE_UNAVAILABLE,
      `FUSE is not available: fuse-native cannot be loaded (${String((cause as Error)?.message ?? cause)}). ` +
        'Install the optional dependency fuse-native@2.2.6 and the libfuse2 library (Debian: apt-get install libfuse2 fuse3).',
      { cause },
    );
  }
  const Fuse = ((mod as { default?: unknown }).default ?? mod) as unknown;
  if (typeof Fuse !== 'function' || typeof (Fuse as Partial<FuseConstructor>).unmount !== 'function') {
    loaded = undefined;
    throw new ImgstreamError(ErrorCode.FUSE_UNAVAILABLE, 'FUSE is not available: fuse-native did not export its Fuse class (expected fuse-native@2.2.6)');
  }
  try {
    await access('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch (cause) {
    loaded = undefined;
    throw new ImgstreamError(ErrorCode.FUSE_UNAVAILABLE, 'FUSE is not available: /dev/fuse cannot be opened (load the fuse kernel module, or give the container the device)', { cause });
  }
  return Fuse as FuseConstructor;
}

/**
 * Resolves when FUSE can be used here (fuse-native, libfuse2 and /dev/fuse are there); rejects
 * with IMGSTREAM_FUSE_UNAVAILABLE saying what is missing otherwise.
 */
export async function checkFuseAvailable(): Promise<void> {
  await loadFuseNative();
}
