/** Chart size, px. */
const W = 760;
const H = 420;
const M = { left: 60, right: 20, top: 40, bottom: 50 };
const COLORS = ['#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#e6ab02', '#a6761d'];

function esc(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

/**
 * An SVG of latency distributions as CDFs (x: latency, log scale; y: share of requests), one line per
 * series. Hand-drawn on purpose: a few polylines need no charting library.
 */
export function latencySvg(title: string, series: Record<string, number[]>): string {
  const entries = Object.entries(series).filter(([, v]) => v.length > 0);
  const all = entries.flatMap(([, v]) => v);
  const lo = Math.max(0.1, Math.min(...all));
  const hi = Math.max(...all) * 1.05;
  const x = (ms: number) =>
    M.left +
    ((Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) *
      (W - M.left - M.right);
  const y = (q: number) => H - M.bottom - q * (H - M.top - M.bottom);
  const lines = entries.map(([name, values], i) => {
    const s = [...values].sort((a, b) => a - b);
    const step = Math.max(1, Math.floor(s.length / 300));
    const pts: string[] = [];
    for (let k = 0; k < s.length; k += step)
      pts.push(`${x(s[k]!).toFixed(1)},${y((k + 1) / s.length).toFixed(1)}`);
    pts.push(`${x(s[s.length - 1]!).toFixed(1)},${y(1).toFixed(1)}`);
    const color = COLORS[i % COLORS.length]!;
    return (
      `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(' ')}"/>` +
      `<text x="${W - M.right - 230}" y="${M.top + 16 + i * 16}" fill="${color}" font-size="12">${esc(name)} (n=${s.length})</text>`
    );
  });
  const ticks: string[] = [];
  for (let d = Math.pow(10, Math.floor(Math.log10(lo))); d <= hi; d *= 10) {
    for (const m of [1, 1.5, 2, 3, 5, 7]) {
      const v = d * m;
      if (v < lo || v > hi) continue;
      ticks.push(
        `<line x1="${x(v)}" x2="${x(v)}" y1="${y(0)}" y2="${y(1)}" stroke="#ddd"/><text x="${x(v)}" y="${H - M.bottom + 16}" font-size="11" text-anchor="middle">${v} ms</text>`,
      );
    }
  }
  for (const q of [0, 0.5, 0.9, 0.99, 1]) {
    ticks.push(
      `<line x1="${M.left}" x2="${W - M.right}" y1="${y(q)}" y2="${y(q)}" stroke="#eee"/><text x="${M.left - 6}" y="${y(q) + 4}" font-size="11" text-anchor="end">${q}</text>`,
    );
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${M.left}" y="22" font-size="13">${esc(title)}</text>`,
    ...ticks,
    ...lines,
    `<text x="${(W + M.left) / 2}" y="${H - 12}" font-size="12" text-anchor="middle">latency (log scale)</text>`,
    '</svg>',
    '',
  ].join('\n');
}
