import { randomBytes } from 'node:crypto';
import { open, readdir, readlink, stat, type FileHandle } from 'node:fs/promises';
import { write } from 'node:fs';

// FUSE notifications are messages the server writes to its /dev/fuse descriptor without a request
// (unique 0; the notify code in the error field). libfuse2's high-level API, which fuse-native
// uses, exposes none of them, so they are written here on the descriptor libfuse opened.
const FUSE_NOTIFY_INVAL_ENTRY = 3;
/** The kernel's node id of the mount's root directory (FUSE_ROOT_ID); libfuse never reuses it. */
export const FUSE_ROOT_ID = 1;

/** `fuse_out_header` + `fuse_notify_inval_entry_out` + the name, NUL-terminated. */
function invalEntryMessage(parent: number, name: string): Buffer {
  const nameBytes = Buffer.from(name);
  const msg = Buffer.alloc(32 + nameBytes.length + 1);
  msg.writeUInt32LE(msg.length, 0);
  msg.writeInt32LE(FUSE_NOTIFY_INVAL_ENTRY, 4);
  // unique (8..15) stays 0
  msg.writeBigUInt64LE(BigInt(parent), 16);
  msg.writeUInt32LE(nameBytes.length, 24);
  // flags (28..31) stay 0: drop the entry (d_invalidate), not only expire it
  nameBytes.copy(msg, 32);
  return msg;
}

/**
 * Tells the kernel to drop its cached entry `name` in the directory with node id `parent`, and
 * the unused cached entries below it. Resolves true when it had one, false when it had none.
 *
 * Asynchronous on purpose (a libuv pool thread does the write): the kernel takes the parent
 * directory's lock, which a lookup in that directory holds while it waits for this process to
 * answer, so a synchronous write from the serving thread could deadlock.
 */
export function invalidateEntry(fd: number, parent: number, name: string): Promise<boolean> {
  const msg = invalEntryMessage(parent, name);
  return new Promise((resolve, reject) =>
    write(fd, msg, 0, msg.length, null, (err) => {
      if (err === null) resolve(true);
      else if ((err as NodeJS.ErrnoException).code === 'ENOENT') resolve(false);
      else reject(err);
    }),
  );
}

/**
 * Finds this process's /dev/fuse descriptor of the FUSE mount at `mountPoint`: looks up a random
 * name in the mount's root (the kernel caches the miss: the mount must cache negative entries), then
 * asks each /dev/fuse descriptor of the process to drop that entry; only the mount's own connection
 * has it. Undefined when none does.
 */
export async function findNotifyFd(mountPoint: string): Promise<number | undefined> {
  const probe = await cachedMiss(mountPoint);
  for (const fd of await fuseDescriptors()) {
    // an error: a dead connection, not ours
    if (await invalidateEntry(fd, FUSE_ROOT_ID, probe).catch(() => false)) return fd;
  }
  return undefined;
}

/** Looks up a random name in `dir` of a mount that caches negative entries (so the kernel keeps the miss); returns the name. */
async function cachedMiss(dir: string): Promise<string> {
  const probe = `.imgstream-probe-${randomBytes(8).toString('hex')}`;
  await stat(`${dir}/${probe}`).catch(() => undefined);
  return probe;
}

async function fuseDescriptors(): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${name}`).catch(() => '');
    if (target === '/dev/fuse') out.push(Number(name));
  }
  return out;
}

/** Highest node id {@link pinDirectory} tries. */
const MAX_PROBED_NODE_ID = 4096;

/** A directory of the mount kept looked up, with the kernel's node id for it. */
export interface PinnedDirectory {
  readonly nodeId: number;
  /** Open on the directory: the kernel keeps its inode, so libfuse keeps its node id. Closed before unmount. */
  readonly handle: FileHandle;
}

/**
 * Opens the directory `name` in the mount's root and finds the node id the kernel knows it by
 * (libfuse2's high-level API numbers nodes itself and does not tell the filesystem): looks up a
 * random name in it (the kernel caches the miss), then asks the kernel to drop that entry under
 * node ids 2, 3, ...; the directory's id is the one that had it. Undefined (nothing left open)
 * when none of the first {@link MAX_PROBED_NODE_ID} does.
 */
export async function pinDirectory(fd: number, mountPoint: string, name: string): Promise<PinnedDirectory | undefined> {
  const handle = await open(`${mountPoint}/${name}`, 'r');
  try {
    const probe = await cachedMiss(`${mountPoint}/${name}`);
    for (let nodeId = FUSE_ROOT_ID + 1; nodeId <= MAX_PROBED_NODE_ID; nodeId++) {
      // ENOENT: no such node or no such entry in it; ENOTDIR: not a directory
      if (await invalidateEntry(fd, nodeId, probe).catch(() => false)) return { nodeId, handle };
    }
  } catch {
    // the mount went away
  }
  await handle.close().catch(() => undefined);
  return undefined;
}
