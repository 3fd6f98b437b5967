// Real FUSE (as root): stale mounts left by a crashed (SIGKILL) or hung (SIGSTOP) server are
// recovered at mount(), and a missing libfuse2 gives a coded error.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import diagnosticsChannel from 'node:diagnostics_channel';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@imgstream/core';
import { ImgstreamFs } from '@imgstream/fuse';
import { memoryLayer } from '../helpers/memory-layer.js';
import { mountCount, run, sh, teardownStack } from '../helpers/fuse.js';
import type { Teardown } from '../helpers/tmp.js';

const child = new URL('./fixtures/mount-child.ts', import.meta.url).pathname;
const nodeArgs = ['--conditions=imgstream-source', '--import', 'tsx', child];

/** Starts the mounting child; resolves once it has mounted. Killed (and its mount detached) at teardown. */
async function mountInChild(t: Teardown, mountPoint: string): Promise<{ pid: number; layerDir: string }> {
  const p = spawn(process.execPath, [...nodeArgs, mountPoint], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(async () => {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGCONT');
      p.kill('SIGKILL');
    }
    await run('umount', ['-l', mountPoint]);
  });
  const layerDir = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('child did not mount in time')), 20_000);
    p.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /mounted (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    p.on('exit', (code) => reject(new Error(`child exited ${code}`)));
  });
  return { pid: p.pid!, layerDir };
}

async function tempMountPoint(t: Teardown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'imgstream-fuse-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'mnt');
}

describe('ImgstreamFs lifecycle', () => {
  for (const how of ['SIGKILL', 'SIGSTOP'] as const) {
    it(`recovers the stale mount of a server stopped with ${how}`, { timeout: 60_000 }, async (t) => {
      const td = teardownStack((fn) => t.after(fn));
      const mountPoint = await tempMountPoint(td);
      const { pid, layerDir } = await mountInChild(td, mountPoint);
      assert.equal(await sh('cat', [`${layerDir}/hello`]), 'from the child');
      process.kill(pid, how);
      if (how === 'SIGKILL') {
        const dead = await run('stat', [mountPoint]);
        assert.match(dead.stderr, /Transport endpoint is not connected|Software caused connection abort/);
      }
      assert.equal(await mountCount(mountPoint), 1);

      const events: unknown[] = [];
      const onStale = (m: unknown): void => void events.push(m);
      diagnosticsChannel.subscribe('imgstream:fuse:stale-mount', onStale);
      td.after(() => diagnosticsChannel.unsubscribe('imgstream:fuse:stale-mount', onStale));

      const fs = new ImgstreamFs({ mountPoint, staleCheckTimeoutMs: 1_000 });
      td.after(() => fs.close());
      const started = performance.now();
      await fs.mount();
      assert.ok(performance.now() - started < 10_000);
      assert.equal(events.length, 1);
      assert.match((events[0] as { reason: string }).reason, how === 'SIGKILL' ? /^(ENOTCONN|ECONNABORTED)$/ : /^ETIMEDOUT$/);
      const layer = memoryLayer([{ path: 'again', type: 'file', content: 'served again' }]);
      fs.addLayer(layer.index.layerDigest, layer);
      assert.equal(await sh('cat', [`${fs.layerPath(layer.index.layerDigest)}/again`]), 'served again');
      assert.equal(await mountCount(mountPoint), 1);
      await fs.close();
      assert.equal(await mountCount(mountPoint), 0);
    });
  }

  it('refuses a mount point that a live server answers for', { timeout: 30_000 }, async (t) => {
    const td = teardownStack((fn) => t.after(fn));
    const mountPoint = await tempMountPoint(td);
    await mountInChild(td, mountPoint);
    const fs = new ImgstreamFs({ mountPoint, staleCheckTimeoutMs: 2_000 });
    await assert.rejects(fs.mount(), { code: ErrorCode.MOUNT_FAILED });
    await fs.close();
  });

  it('gives IMGSTREAM_FUSE_UNAVAILABLE when libfuse2 cannot be loaded', { timeout: 30_000 }, async () => {
    const lib = (await sh('sh', ['-c', "ldconfig -p | awk '/libfuse.so.2 /{print $NF; exit}'"])).trim();
    assert.ok(lib !== '', 'libfuse.so.2 is installed');
    // a private mount namespace where libfuse.so.2 is an empty file; the host is untouched
    const out = await sh('unshare', ['-m', 'sh', '-c', `mount --bind /dev/null ${lib} && exec "$0" "$@"`, process.execPath, ...nodeArgs, '/nonexistent', 'check']);
    const result = JSON.parse(out) as { code: string; message: string };
    assert.equal(result.code, ErrorCode.FUSE_UNAVAILABLE);
    assert.match(result.message, /libfuse2/);
    // and with it: available
    assert.equal((await sh(process.execPath, [...nodeArgs, '/nonexistent', 'check'])).trim(), 'available');
  });

  it('validates options and digests with coded errors', () => {
    assert.throws(() => new ImgstreamFs({ readTimeoutMs: 0 }), { code: ErrorCode.INVALID_OPTION });
    assert.throws(() => new ImgstreamFs({ fsName: 'a,b' }), { code: ErrorCode.INVALID_OPTION });
    const fs = new ImgstreamFs();
    assert.equal(fs.mountPoint, '/run/imgstream/mnt');
    assert.throws(() => fs.addImage('x', 'sha256:nothex' as never, []), { code: ErrorCode.INVALID_DIGEST });
  });
});
