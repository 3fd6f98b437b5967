import type { IEvent } from 'kubernetes-models/v1/Event';

/** kubectl's short age format (k8s.io/apimachinery HumanDuration, simplified to what events show). */
export function humanDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('').trimEnd()).join('\n');
}

/** Events as `kubectl get events` prints them (oldest last-seen first). */
export function kubectlGetEvents(events: IEvent[], nowMs: number): string {
  const sorted = [...events].sort((a, b) => Date.parse(a.lastTimestamp ?? '') - Date.parse(b.lastTimestamp ?? ''));
  const rows = [['LAST SEEN', 'TYPE', 'REASON', 'OBJECT', 'MESSAGE']];
  for (const e of sorted) {
    const last = humanDuration(nowMs - Date.parse(e.lastTimestamp ?? ''));
    const seen = (e.count ?? 1) > 1 ? `${last} (x${e.count} over ${humanDuration(nowMs - Date.parse(e.firstTimestamp ?? ''))})` : last;
    rows.push([seen, e.type ?? '', e.reason ?? '', `${(e.involvedObject.kind ?? '').toLowerCase()}/${e.involvedObject.name}`, e.message ?? '']);
  }
  return table(rows);
}

/** The Events section of `kubectl describe node`. */
export function kubectlDescribeEvents(events: IEvent[], nowMs: number): string {
  const sorted = [...events].sort((a, b) => Date.parse(a.firstTimestamp ?? '') - Date.parse(b.firstTimestamp ?? ''));
  const rows = [['Type', 'Reason', 'Age', 'From', 'Message'], ['----', '------', '----', '----', '-------']];
  for (const e of sorted) {
    const age = humanDuration(nowMs - Date.parse(e.firstTimestamp ?? ''));
    const last = humanDuration(nowMs - Date.parse(e.lastTimestamp ?? ''));
    const ageText = (e.count ?? 1) > 1 ? `${last} (x${e.count} over ${age})` : age;
    rows.push([e.type ?? '', e.reason ?? '', ageText, e.source?.component ?? '', e.message ?? '']);
  }
  return `Events:\n${table(rows).replace(/^/gm, '  ')}`;
}
