import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { promisify } from 'node:util';
import { DelayProxy } from '../../bench/src/net/delay-proxy.ts';
import { EmulatedNetwork } from '../../bench/src/net/emulated-network.ts';
import { PROFILES } from '../../bench/src/net/profiles.ts';
import { measureProfile, PROBE_PORT, startProbeServer } from '../../bench/src/net/verify.ts';
import { Cleanup } from '../../bench/src/util/cleanup.ts';

const exec = promisify(execFile);

test('the delay proxy adds its RTT to a request/answer and counts bytes both ways', { timeout: 30_000 }, async (t) => {
  const echo = createServer((s) => s.on('data', (d) => s.write(d)));
  t.after(() => echo.close());
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  const echoPort = (echo.address() as { port: number }).port;
  const proxy = new DelayProxy({ rttMs: 30 });
  t.after(() => proxy.close());
  const [port] = await proxy.listen([{ listenHost: '127.0.0.1', listenPort: 0, targetHost: '127.0.0.1', targetPort: echoPort }]);
  const sock = connect({ host: '127.0.0.1', port: port!, noDelay: true });
  t.after(() => sock.destroy());
  const t0 = performance.now();
  await new Promise((r) => sock.once('connect', r));
  const times: number[] = [];
  let firstExchangeDoneMs = 0;
  for (let i = 0; i < 5; i++) {
    const s = performance.now();
    sock.write('0123456789');
    await new Promise((r) => sock.once('data', r));
    times.push(performance.now() - s);
    if (i === 0) firstExchangeDoneMs = performance.now() - t0;
  }
  // the first exchange waits for the emulated handshake too: ~2 RTT from the connect call (the
  // handshake's RTT is counted from accept, so measure from before connect, not from the write)
  assert.ok(firstExchangeDoneMs >= 58 && performance.now() - t0 < 2000, `first exchange done ${firstExchangeDoneMs} ms after connect`);
  const later = times.slice(1).sort((a, b) => a - b);
  assert.ok(later[0]! >= 29.5 && later[1]! < 60, `RTTs ${later.join(', ')}`);
  const { firstDownstreamMs, lastDownstreamMs, ...stats } = proxy.snapshot();
  assert.deepEqual(stats, { upstreamBytes: 50, downstreamBytes: 50, connections: 1 });
  assert.ok(firstDownstreamMs !== null && lastDownstreamMs !== null && lastDownstreamMs - firstDownstreamMs >= 4 * 29.5, `${firstDownstreamMs} .. ${lastDownstreamMs}`);
});

test('cross-region profile: RTT and throughput within 30 % of the profile, nothing left after teardown', { timeout: 120_000 }, async (t) => {
  const profile = PROFILES['cross-region']!;
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const net = await EmulatedNetwork.create(cleanup, profile);
  await startProbeServer(cleanup, net);
  const [proxied] = await net.startProxy([PROBE_PORT]);
  const proxyPid = net.proxyPid()!;

  // Both veth ends live in our namespaces with link-local addresses; none in the root namespace.
  const nodeAddrs = (await exec('ip', ['-n', net.nodeNs, '-4', '-o', 'addr', 'show'])).stdout;
  assert.match(nodeAddrs, new RegExp(`inet ${net.nodeAddress.replace(/\./g, '\\.')}/30`));
  assert.match(net.nodeAddress, /^169\.254\.\d+\.1$/);
  const rootLinks = (await exec('ip', ['-o', 'link', 'show'])).stdout;
  assert.ok(!rootLinks.includes(`imgsb${net.id}`), rootLinks);
  assert.match(await net.qdisc(), /tbf .*rate 200Mbit/);

  const m = await measureProfile(net, proxied!.port, 50 * 1024 * 1024);
  t.diagnostic(`cross-region measured: RTT ${m.rttMs.toFixed(2)} ms, first exchange ${m.firstExchangeMs.toFixed(1)} ms, ${m.mbitPerSecond.toFixed(0)} Mbit/s`);
  // the delay is emulated, so the RTT is never below the profile; a loaded machine only adds to it
  assert.ok(m.rttMs >= 0.95 * profile.rttMs && m.rttMs <= 1.6 * profile.rttMs, `RTT ${m.rttMs} ms vs ${profile.rttMs} ms`);
  const target = profile.rateBitsPerSecond / 1e6;
  // tbf caps the rate; a loaded machine may fall short of it
  assert.ok(m.mbitPerSecond <= 1.1 * target && m.mbitPerSecond >= 0.5 * target, `throughput ${m.mbitPerSecond} Mbit/s vs ${target}`);
  const stats = await net.stats();
  assert.ok(stats.downstreamBytes >= 50 * 1024 * 1024 && stats.downstreamBytes < 50 * 1024 * 1024 + 4096, `proxy counted ${stats.downstreamBytes}`);

  await cleanup.run();
  assert.equal(existsSync(`/run/netns/${net.nodeNs}`), false);
  assert.equal(existsSync(`/run/netns/${net.registryNs}`), false);
  const netns = (await exec('ip', ['netns', 'list'])).stdout;
  assert.ok(!netns.includes(`imgsb-${net.id}-`), netns);
  assert.ok(!(await exec('ip', ['-o', 'link', 'show'])).stdout.includes(`imgsb${net.id}`));
  assert.equal(existsSync(`/proc/${proxyPid}`), false, 'delay proxy still running');
});
