import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, FetchScheduler, isImgstreamError } from '@imgstream/core';

/** A request that runs until `release()` is called. */
function held(): { promise: Promise<void>; release: () => void } {
  let release!: () => void;
  const promise = new Promise<void>((resolve) => (release = resolve));
  return { promise, release };
}

test('background requests wait for the silence after foreground and prefetch requests', async () => {
  const s = new FetchScheduler({ backgroundSilenceMs: 200, backgroundMaxDeferMs: 60_000 });
  for (const busy of ['foreground', 'prefetch'] as const) {
    const fg = held();
    const running = s.run(busy, () => fg.promise);
    let startedAt: number | undefined;
    const bg = s.run('background', async () => {
      startedAt = performance.now();
    });
    await sleep(50);
    assert.equal(startedAt, undefined, `no background request while a ${busy} request runs`);
    fg.release();
    await running;
    const endedAt = performance.now();
    await bg;
    assert.ok(startedAt !== undefined && startedAt - endedAt >= 190, `${busy}: started ${startedAt! - endedAt} ms after the busy request ended`);
  }
  // long after the last busy request, background work starts at once
  await sleep(250);
  const before = performance.now();
  await s.run('background', async () => undefined);
  assert.ok(performance.now() - before < 150);
});

test('a background request that waited backgroundMaxDeferMs starts while reads go on, one at a time', async () => {
  const s = new FetchScheduler({ backgroundSilenceMs: 10_000, backgroundMaxDeferMs: 300 });
  const fg = held();
  const running = s.run('foreground', () => fg.promise);
  const queuedAt = performance.now();
  const starts: number[] = [];
  const gates = [held(), held()];
  const bgs = gates.map((g) =>
    s.run('background', async () => {
      starts.push(performance.now());
      await g.promise;
    }),
  );
  await sleep(1_000);
  assert.equal(starts.length, 1, 'one background request at a time while foreground work runs');
  assert.ok(starts[0]! - queuedAt >= 290, `started after ${starts[0]! - queuedAt} ms`);
  gates[0]!.release();
  await bgs[0];
  await sleep(500);
  assert.equal(starts.length, 2, 'the next one after it, still bounded by the deferral limit');
  gates[1]!.release();
  fg.release();
  await Promise.all([running, ...bgs]);
});

test('silence 0 keeps the old behaviour: background starts at once when nothing else runs', async () => {
  const s = new FetchScheduler();
  assert.equal(s.backgroundSilenceMs, 0);
  const before = performance.now();
  await s.run('foreground', async () => undefined);
  await s.run('background', async () => undefined);
  assert.ok(performance.now() - before < 100);
  assert.equal(s.busy, false);
  assert.ok(s.lastBusyMs > before);
});

test('a background request aborted while it waits for silence rejects with the reason and leaves no timer', async () => {
  const s = new FetchScheduler({ backgroundSilenceMs: 60_000, backgroundMaxDeferMs: 60_000 });
  await s.run('foreground', async () => undefined);
  const ac = new AbortController();
  const reason = new Error('stop');
  const bg = s.run('background', async () => assert.fail('must not run'), ac.signal);
  await sleep(20);
  ac.abort(reason);
  await assert.rejects(bg, (e) => e === reason);
});

test('bad silence options are refused naming the option', () => {
  assert.throws(() => new FetchScheduler({ backgroundSilenceMs: -1 }), (e) => isImgstreamError(e, ErrorCode.INVALID_OPTION) && /backgroundSilenceMs/.test(String(e)));
  assert.throws(() => new FetchScheduler({ backgroundMaxDeferMs: 1.5 }), (e) => isImgstreamError(e, ErrorCode.INVALID_OPTION) && /backgroundMaxDeferMs/.test(String(e)));
});

test('touch() (a read served from memory) counts as activity for the silence', async () => {
  const s = new FetchScheduler({ backgroundSilenceMs: 200, backgroundMaxDeferMs: 60_000 });
  await s.run('foreground', async () => undefined);
  let startedAt: number | undefined;
  const bg = s.run('background', async () => {
    startedAt = performance.now();
  });
  await sleep(120);
  s.touch();
  const touchedAt = performance.now();
  await bg;
  assert.ok(startedAt! - touchedAt >= 190, `started ${startedAt! - touchedAt} ms after the touch`);
});
