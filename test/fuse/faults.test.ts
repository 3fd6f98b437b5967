// Real FUSE (as root): a content source that fails or stalls yields EIO within a bounded time,
// with the reason published, while metadata and other files keep working.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import diagnosticsChannel from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import { ErrorCode, ImgstreamError } from '@imgstream/core';
import { memoryLayer, sha256 } from '../helpers/memory-layer.js';
import { mountedFs, run, sh } from '../helpers/fuse.js';

describe('ImgstreamFs read faults', () => {
  it('fails a read with EIO when the source fails, stalls or returns short data; others keep working', { timeout: 60_000 }, async (t) => {
    const good = randomBytes(200_000);
    const layer = memoryLayer([
      { path: 'good', type: 'file', content: good },
      { path: 'broken', type: 'file', content: 'x'.repeat(10_000) },
      { path: 'stalled', type: 'file', content: 'y'.repeat(10_000) },
      { path: 'short', type: 'file', content: 'z'.repeat(10_000) },
    ]);
    let stalledAborted = 0;
    layer.hook = (entry, _offset, _length, signal) => {
      if (entry.path === 'broken') throw new ImgstreamError(ErrorCode.REGISTRY_UNAVAILABLE, 'registry kept failing', { status: 503 });
      if (entry.path === 'stalled') {
        // never resolves on its own; counts the abort the filesystem sends
        return new Promise<void>(() => signal?.addEventListener('abort', () => stalledAborted++));
      }
      return undefined;
    };
    const originalRead = layer.read.bind(layer);
    layer.read = async (entry, offset, length, options) => {
      const bytes = await originalRead(entry, offset, length, options);
      return entry.path === 'short' ? bytes.subarray(0, length - 1) : bytes;
    };
    const readTimeoutMs = 1_500;
    const fs = await mountedFs(t, { readTimeoutMs });
    fs.addLayer(layer.index.layerDigest, layer);
    const root = fs.layerPath(layer.index.layerDigest);

    const errors: { path: string; errno: number; error: { code?: string } }[] = [];
    const onError = (m: unknown): void => void errors.push(m as (typeof errors)[number]);
    diagnosticsChannel.subscribe('imgstream:fuse:read-error', onError);
    t.after(() => diagnosticsChannel.unsubscribe('imgstream:fuse:read-error', onError));

    const broken = await run('cat', [`${root}/broken`], { timeoutMs: 10_000 });
    assert.notEqual(broken.code, 0);
    assert.match(broken.stderr, /Input\/output error/);
    assert.ok(broken.ms < 2_000, `failed read took ${broken.ms} ms`);

    // start the stalled read, and meanwhile check metadata and other reads are not held up
    const stalled = run('cat', [`${root}/stalled`], { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 200));
    const meta = await run('stat', ['-c', '%s', `${root}/good`]);
    assert.equal(meta.stdout.trim(), String(good.length));
    assert.ok(meta.ms < 500, `stat during a stalled read took ${meta.ms} ms`);
    const other = await run('sha256sum', [`${root}/good`]);
    assert.equal(`sha256:${other.stdout.split(' ')[0]}`, sha256(good));
    assert.ok(other.ms < 1_000, `read during a stalled read took ${other.ms} ms`);
    const listing = await sh('ls', [root]);
    assert.equal(listing, 'broken\ngood\nshort\nstalled\n');

    const s = await stalled;
    assert.notEqual(s.code, 0);
    assert.match(s.stderr, /Input\/output error/);
    assert.ok(s.ms >= readTimeoutMs - 100 && s.ms < readTimeoutMs + 2_000, `stalled read answered after ${s.ms} ms`);
    assert.ok(stalledAborted >= 1, 'the source saw the abort');

    const short = await run('cat', [`${root}/short`]);
    assert.match(short.stderr, /Input\/output error/);

    const byPath = new Map(errors.map((e) => [e.path, e]));
    assert.equal(byPath.get('broken')?.error.code, ErrorCode.REGISTRY_UNAVAILABLE);
    assert.equal(byPath.get('broken')?.errno, 5);
    assert.equal(byPath.get('stalled')?.error.code, ErrorCode.TIMEOUT);
    assert.equal(byPath.get('short')?.error.code, ErrorCode.CORRUPT_DATA);

    // the filesystem still serves after the faults, and a source that recovers is read again
    layer.hook = undefined;
    assert.equal(await sh('cat', [`${root}/broken`]), 'x'.repeat(10_000));
  });

  it('close() answers pending reads and unmounts', { timeout: 30_000 }, async (t) => {
    const layer = memoryLayer([{ path: 'stuck', type: 'file', content: 'never' }]);
    layer.hook = () => new Promise<void>(() => undefined);
    const fs = await mountedFs(t, { readTimeoutMs: 20_000 });
    fs.addLayer(layer.index.layerDigest, layer);
    const reading = run('cat', [`${fs.layerPath(layer.index.layerDigest)}/stuck`], { timeoutMs: 15_000 });
    await new Promise((r) => setTimeout(r, 300));
    const started = performance.now();
    await fs.close();
    const r = await reading;
    assert.notEqual(r.code, 0);
    assert.ok(performance.now() - started < 5_000);
    assert.equal(fs.mounted, false);
    await fs.close(); // idempotent
    assert.throws(() => fs.addLayer(layer.index.layerDigest, layer), { code: ErrorCode.CLOSED });
    const mounts = await sh('cat', ['/proc/self/mountinfo']);
    assert.equal(mounts.includes(fs.mountPoint), false);
  });

  it('destroy(err) aborts the connection: pending and later reads fail at once, the mount is gone', { timeout: 30_000 }, async (t) => {
    const layer = memoryLayer([
      { path: 'stuck', type: 'file', content: 'never' },
      { path: 'ok', type: 'file', content: 'fine' },
    ]);
    layer.hook = (entry) => (entry.path === 'stuck' ? new Promise<void>(() => undefined) : undefined);
    const fs = await mountedFs(t, { readTimeoutMs: 20_000 });
    fs.addLayer(layer.index.layerDigest, layer);
    const root = fs.layerPath(layer.index.layerDigest);
    assert.equal(await sh('cat', [`${root}/ok`]), 'fine');
    const reading = run('cat', [`${root}/stuck`], { timeoutMs: 15_000 });
    await new Promise((r) => setTimeout(r, 300));
    const started = performance.now();
    await fs.destroy(new Error('test destroy'));
    const r = await reading;
    assert.notEqual(r.code, 0);
    assert.ok(performance.now() - started < 5_000, `pending read answered after ${performance.now() - started} ms`);
    assert.equal(fs.mounted, false);
    const mounts = await sh('cat', ['/proc/self/mountinfo']);
    assert.equal(mounts.includes(fs.mountPoint), false);
    await assert.rejects(fs.mount(), { code: ErrorCode.CLOSED });
  });

  it('keeps serving files that are open when their layer is removed', { timeout: 30_000 }, async (t) => {
    const content = randomBytes(1024 * 1024);
    const layer = memoryLayer([{ path: 'f', type: 'file', content }]);
    let gate: (() => void) | undefined;
    const opened = new Promise<void>((resolve) => {
      layer.hook = (_e, offset) => {
        if (offset === 0) return undefined;
        resolve();
        // hold the second read until the layer is removed
        return new Promise<void>((r) => (gate = r));
      };
    });
    const fs = await mountedFs(t);
    fs.addLayer(layer.index.layerDigest, layer);
    const reading = run('sha256sum', [`${fs.layerPath(layer.index.layerDigest)}/f`]);
    await opened;
    assert.equal(fs.removeLayer(layer.index.layerDigest), true);
    layer.hook = undefined;
    gate?.();
    const r = await reading;
    assert.equal(`sha256:${r.stdout.split(' ')[0]}`, sha256(content));
    assert.equal((await run('ls', [`${fs.mountPoint}/layers`])).stdout, '');
  });
});
