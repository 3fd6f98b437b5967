import { readFile } from 'node:fs/promises';

/** One line of /proc/self/mountinfo. */
export interface MountRecord {
  /** Device number of the mounted filesystem: for FUSE, the connection id under /sys/fs/fuse/connections. */
  readonly dev: number;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly source: string;
}

/** The mounts of this process' mount namespace (async; /proc is never a FUSE path). */
export async function readMountTable(): Promise<MountRecord[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: MountRecord[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const f = left.split(' ');
    const r = right.split(' ');
    const [major, minor] = (f[2] ?? '0:0').split(':').map(Number);
    out.push({
      dev: (((major ?? 0) << 20) | (minor ?? 0)) >>> 0,
      mountPoint: unescapeMountField(f[4] ?? ''),
      fsType: r[0] ?? '',
      source: unescapeMountField(r[1] ?? ''),
    });
  }
  return out;
}

/** The last (top-most) mount at `mountPoint`, if any. */
export async function findMount(mountPoint: string): Promise<MountRecord | undefined> {
  const table = await readMountTable();
  let found: MountRecord | undefined;
  for (const m of table) if (m.mountPoint === mountPoint) found = m;
  return found;
}

function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}
