/** Latency summary of one series, ms. */
export interface LatencySummary {
  n: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** The q-quantile (0..1) of sorted values (nearest rank). */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** The median of `xs` as one of its values (the upper of the middle two for an even count), so a caller can find the round it came from. */
export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

/** p50 / p90 / p99 / max of a series, rounded to 0.1 ms. */
export function summarize(values: number[]): LatencySummary {
  const s = [...values].sort((a, b) => a - b);
  const r = (v: number) => Math.round(v * 10) / 10;
  return {
    n: s.length,
    p50Ms: r(quantile(s, 0.5)),
    p90Ms: r(quantile(s, 0.9)),
    p99Ms: r(quantile(s, 0.99)),
    maxMs: r(s[s.length - 1] ?? NaN),
  };
}
