import { spawn } from 'node:child_process';
import { access, statfs, writeFile } from 'node:fs/promises';
import { ErrorCode, ImgstreamError } from '@imgstream/core';
import { findMount } from './mount-table.js';
import type { MountRecord } from './mount-table.js';

const CONNECTIONS = '/sys/fs/fuse/connections';

export type StaleMountOutcome = 'none' | 'recovered';

/**
 * Makes `mountPoint` usable for a new mount. A FUSE mount left there by a crashed process
 * ("Transport endpoint is not connected", or a server that no longer answers within
 * `timeoutMs`) is aborted through fusectl and lazily unmounted. A mount that still answers is
 * somebody else's: IMGSTREAM_MOUNT_FAILED.
 */
export async function recoverStaleMount(mountPoint: string, timeoutMs: number): Promise<{ outcome: StaleMountOutcome; mount?: MountRecord; reason?: string }> {
  const m = await findMount(mountPoint);
  if (m === undefined) return { outcome: 'none' };
  const probe = await probeMount(mountPoint, timeoutMs);
  if (probe === 'alive') {
    throw new ImgstreamError(ErrorCode.MOUNT_FAILED, `${mountPoint} is already mounted (${m.fsType}) and answering; unmount it first`, { path: mountPoint });
  }
  if (!m.fsType.startsWith('fuse')) {
    throw new ImgstreamError(ErrorCode.MOUNT_FAILED, `${mountPoint} is mounted (${m.fsType}) and fails with ${probe}; unmount it first`, { path: mountPoint });
  }
  await abortConnection(m.dev);
  await lazyUnmount(mountPoint);
  return { outcome: 'recovered', mount: m, reason: probe };
}

/** Aborts a FUSE connection (all its requests fail with ENOTCONN). Best effort. */
export async function abortConnection(dev: number): Promise<boolean> {
  const file = `${CONNECTIONS}/${dev}/abort`;
  try {
    await access(CONNECTIONS);
    try {
      await access(file);
    } catch {
      // fusectl may not be mounted yet
      await run('mount', ['-t', 'fusectl', 'fusectl', CONNECTIONS]).catch(() => undefined);
    }
    await writeFile(file, '1');
    return true;
  } catch {
    return false;
  }
}

/** `umount -l`, falling back to `fusermount -uz`. */
export async function lazyUnmount(mountPoint: string): Promise<void> {
  try {
    await run('umount', ['-l', mountPoint]);
  } catch (first) {
    try {
      await run('fusermount', ['-uz', mountPoint]);
    } catch {
      throw new ImgstreamError(ErrorCode.MOUNT_FAILED, `cannot unmount ${mountPoint}: ${(first as Error).message}`, { path: mountPoint, cause: first });
    }
  }
}

/** 'alive' when stat answers; otherwise the error code (ENOTCONN for a dead server) or 'ETIMEDOUT'. */
async function probeMount(mountPoint: string, timeoutMs: number): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve('ETIMEDOUT'), timeoutMs);
  });
  // fs.promises.statfs runs on the libuv pool, not on the event loop, so a hung server cannot block
  // us. statfs always reaches the server; stat may be answered from the kernel's attribute cache
  // (attr_timeout) even after the server died.
  const probe = statfs(mountPoint).then(
    () => 'alive',
    (err: NodeJS.ErrnoException) => err.code ?? 'EIO',
  );
  try {
    return await Promise.race([probe, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${stderr.trim()}`))));
  });
}
