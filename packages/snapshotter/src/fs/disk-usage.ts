import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { SnapshotUsage } from '../snapshot-info.js';

/**
 * Disk usage of a directory tree the way containerd's overlayfs snapshotter counts it: allocated
 * blocks (st_blocks * 512) of each distinct inode, the root directory included; hard links count
 * once. Checks `signal` between entries.
 */
export async function diskUsage(root: string, options: { signal?: AbortSignal } = {}): Promise<SnapshotUsage> {
  const { signal } = options;
  const seen = new Set<string>();
  let sizeBytes = 0;
  const stack = [root];
  while (stack.length > 0) {
    signal?.throwIfAborted();
    const path = stack.pop()!;
    const st = await lstat(path, { bigint: true });
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      sizeBytes += Number(st.blocks) * 512;
    }
    if (st.isDirectory()) {
      for (const name of await readdir(path)) stack.push(join(path, name));
    }
  }
  return { sizeBytes, inodes: seen.size };
}
