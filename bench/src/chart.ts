import { writeFile, rm } from 'node:fs/promises';
import { run } from './util/proc.ts';

export interface Bar {
  label: string;
  /** null = not available (drawn as a grey placeholder). */
  valueMs: number | null;
  minMs?: number;
  maxMs?: number;
}

export interface BarGroup {
  title: string;
  bars: Bar[];
}

const COLORS = ['#3b6fb6', '#e07b39', '#4caf50', '#8e5ea2', '#c0504d', '#2a9d8f'];
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * Horizontal grouped bars, one group per (image, network profile), each with its own scale (the
 * value is printed beside each bar). Returns SVG text.
 */
export function renderBarChart(title: string, groups: readonly BarGroup[]): string {
  const width = 960;
  const labelW = 250;
  const barH = 18;
  const gap = 6;
  const groupPad = 34;
  const plotW = width - labelW - 110;
  let y = 50;
  const parts: string[] = [];
  for (const g of groups) {
    parts.push(`<text x="16" y="${y + 14}" font-size="15" font-weight="bold">${esc(g.title)}</text>`);
    y += 24;
    const max = Math.max(1, ...g.bars.map((b) => Math.max(b.valueMs ?? 0, b.maxMs ?? 0)));
    for (const [i, b] of g.bars.entries()) {
      const color = b.label.startsWith('physical') ? '#222222' : COLORS[i % COLORS.length]!;
      parts.push(`<text x="${labelW - 8}" y="${y + barH - 5}" font-size="12" text-anchor="end">${esc(b.label)}</text>`);
      if (b.valueMs === null) {
        parts.push(`<rect x="${labelW}" y="${y}" width="${plotW * 0.12}" height="${barH}" fill="#dddddd" stroke="#bbbbbb"/>`);
        parts.push(`<text x="${labelW + plotW * 0.12 + 6}" y="${y + barH - 5}" font-size="12" fill="#888888">not run</text>`);
      } else {
        const w = (b.valueMs / max) * plotW;
        parts.push(`<rect x="${labelW}" y="${y}" width="${Math.max(1, w).toFixed(1)}" height="${barH}" fill="${color}"/>`);
        if (b.minMs !== undefined && b.maxMs !== undefined && b.maxMs > b.minMs) {
          const x1 = labelW + (b.minMs / max) * plotW;
          const x2 = labelW + (b.maxMs / max) * plotW;
          const cy = y + barH / 2;
          parts.push(`<path d="M${x1.toFixed(1)} ${cy} H${x2.toFixed(1)} M${x1.toFixed(1)} ${cy - 5} V${cy + 5} M${x2.toFixed(1)} ${cy - 5} V${cy + 5}" stroke="#000000" stroke-width="1.2"/>`);
        }
        const right = labelW + Math.max(w, b.maxMs !== undefined ? (b.maxMs / max) * plotW : 0);
        parts.push(`<text x="${(right + 6).toFixed(1)}" y="${y + barH - 5}" font-size="12">${(b.valueMs / 1000).toFixed(2)} s</text>`);
      }
      y += barH + gap;
    }
    y += groupPad - gap;
  }
  const height = y + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, sans-serif">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="16" y="28" font-size="17" font-weight="bold">${esc(title)}</text>
${parts.join('\n')}
</svg>
`;
}

/** Renders SVG to PNG with librsvg's `rsvg-convert` (Debian librsvg2-bin, installed by bench/setup.sh). */
export async function svgToPng(svg: string, pngPath: string): Promise<void> {
  const svgPath = `${pngPath}.svg.tmp`;
  await writeFile(svgPath, svg);
  try {
    await run(['rsvg-convert', '--format=png', '--output', pngPath, svgPath]);
  } finally {
    await rm(svgPath, { force: true });
  }
}
