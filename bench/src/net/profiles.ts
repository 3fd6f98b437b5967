/** A network profile: the link between the node (client namespace) and the registry namespace. */
export interface NetworkProfile {
  readonly name: string;
  /** Round-trip time added by the delay proxy (half each way), ms. 0 = none. */
  readonly rttMs: number;
  /** Link rate enforced with `tbf` on both ends of the veth pair, bit/s. 0 = unshaped. */
  readonly rateBitsPerSecond: number;
}

export const PROFILES: Readonly<Record<string, NetworkProfile>> = Object.freeze({
  local: { name: 'local', rttMs: 0, rateBitsPerSecond: 0 },
  'same-zone': { name: 'same-zone', rttMs: 2, rateBitsPerSecond: 1_000_000_000 },
  'cross-region': { name: 'cross-region', rttMs: 20, rateBitsPerSecond: 200_000_000 },
});

export function profileByName(name: string): NetworkProfile {
  const p = PROFILES[name];
  if (p === undefined) throw new Error(`unknown network profile ${JSON.stringify(name)} (known: ${Object.keys(PROFILES).join(', ')})`);
  return p;
}

export function describeProfile(p: NetworkProfile): string {
  const rate = p.rateBitsPerSecond === 0 ? 'unshaped' : `${p.rateBitsPerSecond / 1e6} Mbit/s`;
  return `${p.name} (${p.rttMs} ms RTT, ${rate})`;
}
