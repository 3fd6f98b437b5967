import { randomBytes, randomInt } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import type { Cleanup } from '../util/cleanup.ts';
import { inNetns, LineChild, run, tsEntry } from '../util/proc.ts';
import type { DelayProxyStats } from './delay-proxy.ts';
import type { NetworkProfile } from './profiles.ts';

/** Every namespace and link this benchmark makes starts with this (see `leftovers`). */
export const NAME_PREFIX = 'imgsb';

export interface ProxiedPort {
  /** Port on 127.0.0.1 in the node namespace. */
  readonly port: number;
  /** `127.0.0.1:PORT`: the address the node side uses. */
  readonly hostPort: string;
}

/**
 * Two network namespaces made for one benchmark: the *node* (containerd, ctr, imgstreamd, the
 * delay proxy) and the *registry*, joined by a veth pair with link-local addresses that exist only
 * inside them, `tbf` on both ends for the rate, and a delay proxy on the node's loopback for the
 * RTT. Nothing is added to the root namespace.
 */
export class EmulatedNetwork {
  private proxy: LineChild | null = null;
  private closed = false;

  private constructor(
    readonly profile: NetworkProfile,
    readonly id: string,
    /** Network namespace of the node side. */
    readonly nodeNs: string,
    /** Network namespace of the registry side. */
    readonly registryNs: string,
    readonly nodeAddress: string,
    /** The registry namespace's address on the link; servers there listen on it (or 0.0.0.0). */
    readonly registryAddress: string,
    private readonly vethNode: string,
  ) {}

  /** Creates the namespaces and the shaped link; `cleanup` tears them down. */
  static async create(cleanup: Cleanup, profile: NetworkProfile): Promise<EmulatedNetwork> {
    const id = randomBytes(2).toString('hex');
    const nodeNs = `${NAME_PREFIX}-${id}-node`;
    const registryNs = `${NAME_PREFIX}-${id}-reg`;
    const vethNode = `${NAME_PREFIX}${id}n`;
    const vethReg = `${NAME_PREFIX}${id}r`;
    const subnet = randomInt(1, 255);
    const nodeAddress = `169.254.${subnet}.1`;
    const registryAddress = `169.254.${subnet}.2`;
    const net = new EmulatedNetwork(profile, id, nodeNs, registryNs, nodeAddress, registryAddress, vethNode);
    cleanup.after(() => net.close());
    await run(['ip', 'netns', 'add', nodeNs]);
    await run(['ip', 'netns', 'add', registryNs]);
    // Created inside the node namespace with the peer moved straight into the registry one: neither
    // end ever appears in the root namespace.
    await run(['ip', '-n', nodeNs, 'link', 'add', vethNode, 'type', 'veth', 'peer', 'name', vethReg, 'netns', registryNs]);
    await run(['ip', '-n', nodeNs, 'addr', 'add', `${nodeAddress}/30`, 'dev', vethNode]);
    await run(['ip', '-n', registryNs, 'addr', 'add', `${registryAddress}/30`, 'dev', vethReg]);
    for (const [ns, dev] of [
      [nodeNs, vethNode],
      [registryNs, vethReg],
    ] as const) {
      await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      await run(['ip', '-n', ns, 'link', 'set', dev, 'up']);
      if (profile.rateBitsPerSecond > 0) await run(['tc', '-n', ns, 'qdisc', 'add', 'dev', dev, 'root', ...tbfArgs(profile.rateBitsPerSecond)]);
    }
    return net;
  }

  /**
   * Starts the delay proxy in the node namespace: one 127.0.0.1 listener per target port on the
   * registry address. Call once.
   */
  async startProxy(targetPorts: readonly number[]): Promise<ProxiedPort[]> {
    if (this.proxy !== null) throw new Error('proxy already started');
    const args = ['--rtt-ms', String(this.profile.rttMs)];
    for (const p of targetPorts) args.push('--forward', `127.0.0.1:0=${this.registryAddress}:${p}`);
    this.proxy = new LineChild([...inNetns(this.nodeNs), ...tsEntry('bench/src/net/delay-proxy-main.ts'), ...args]);
    const { ports } = await this.proxy.next<{ ports: number[] }>();
    return ports.map((port) => ({ port, hostPort: `127.0.0.1:${port}` }));
  }

  /** Bytes carried by the proxy since it started or since `resetStats()`. */
  async stats(): Promise<DelayProxyStats> {
    if (this.proxy === null) throw new Error('proxy not started');
    return this.proxy.request<DelayProxyStats>('stats');
  }

  async resetStats(): Promise<void> {
    if (this.proxy === null) throw new Error('proxy not started');
    await this.proxy.request('reset');
  }

  /** The proxy's pid (for RSS), or null. */
  proxyPid(): number | null {
    return this.proxy?.child.pid ?? null;
  }

  /** Stops the proxy, deletes both namespaces (which removes the veth pair and its qdiscs). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.proxy !== null) await this.proxy.stop();
    for (const ns of [this.nodeNs, this.registryNs]) {
      await run(['ip', 'netns', 'del', ns], { timeoutMs: 20_000 }).catch((err: unknown) => {
        if (!String(err).includes('No such file')) throw err;
      });
    }
  }

  /** The `tc qdisc show` of the node end (for the report's environment section). */
  async qdisc(): Promise<string> {
    return (await run(['tc', '-n', this.nodeNs, 'qdisc', 'show', 'dev', this.vethNode])).stdout.trim();
  }
}

/** tbf arguments for `rate`: bucket big enough for GSO bursts at that rate, a short queue. */
export function tbfArgs(rateBitsPerSecond: number): string[] {
  const bytesPerMs = rateBitsPerSecond / 8 / 1000;
  const burst = Math.max(64 * 1024, Math.round(bytesPerMs * 2));
  return ['tbf', 'rate', `${rateBitsPerSecond}bit`, 'burst', String(burst), 'latency', '20ms'];
}

/** Namespaces named like ours that exist now (for tests and a leftover check). */
export async function leftovers(): Promise<string[]> {
  const names = await readdir('/run/netns').catch(() => [] as string[]);
  return names.filter((n) => n.startsWith(`${NAME_PREFIX}-`));
}
