import type { Cleanup } from '../util/cleanup.ts';
import { inNetns, LineChild, tsEntry } from '../util/proc.ts';
import type { EmulatedNetwork } from './emulated-network.ts';

/** What a profile achieved, measured from the node namespace through the proxy and the link. */
export interface ProfileMeasurement {
  /** TCP connect to the proxy (local, so ~0: the emulated handshake shows in `firstExchangeMs`). */
  connectMs: number;
  /** Connect + first request/answer on a new connection: about 2 RTT on a real link. */
  firstExchangeMs: number;
  /** Median request/answer time on an open connection. */
  rttMs: number;
  downloadBytes: number;
  downloadMs: number;
  /** downloadBytes over the download time, Mbit/s (the download includes one RTT). */
  mbitPerSecond: number;
}

/** Port of the probe server in the registry namespace. */
export const PROBE_PORT = 7070;

/** Starts the probe server in the registry namespace (on the link address). */
export async function startProbeServer(cleanup: Cleanup, net: EmulatedNetwork): Promise<void> {
  const server = new LineChild([...inNetns(net.registryNs), ...tsEntry('bench/src/net/probe-main.ts'), 'serve', net.registryAddress, String(PROBE_PORT)]);
  cleanup.after(() => server.stop());
  await server.next();
}

/** Measures RTT and throughput from the node namespace to the probe server through `proxyPort`. */
export async function measureProfile(net: EmulatedNetwork, proxyPort: number, downloadBytes = 100 * 1024 * 1024): Promise<ProfileMeasurement> {
  const probe = new LineChild([...inNetns(net.nodeNs), ...tsEntry('bench/src/net/probe-main.ts'), 'measure', '127.0.0.1', String(proxyPort), String(downloadBytes)]);
  try {
    const m = await probe.next<Omit<ProfileMeasurement, 'mbitPerSecond'>>(120_000);
    return { ...m, mbitPerSecond: (m.downloadBytes * 8) / (m.downloadMs / 1000) / 1e6 };
  } finally {
    await probe.stop();
  }
}

export function formatMeasurement(m: ProfileMeasurement): string {
  return `connect ${m.connectMs.toFixed(2)} ms, first exchange ${m.firstExchangeMs.toFixed(1)} ms, RTT ${m.rttMs.toFixed(2)} ms, ${(m.downloadBytes / 1048576).toFixed(0)} MiB in ${(m.downloadMs / 1000).toFixed(2)} s = ${m.mbitPerSecond.toFixed(0)} Mbit/s`;
}
