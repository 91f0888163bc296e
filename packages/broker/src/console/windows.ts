/**
 * Health over time without Prometheus: per series (every Aggregate, and each site's pods), requests and
 * errors per second and p50/p99 latency over the last 15 minutes, in 10-second buckets. Latencies go into
 * log-spaced bins (±6%), so a bucket costs a fixed few hundred bytes whatever the traffic.
 */

/** Width of one bucket, ms. */
export const BUCKET_MS = 10_000;
/** Buckets kept: 15 minutes. */
export const BUCKETS = 90;
const BIN_RATIO = 1.12;
const BINS = 100; // up to ~0.5 ms × 1.12^100 ≈ 40 s
const MIN_MS = 0.5;

/** One bucket of one series. */
interface Bucket {
  start: number;
  count: number;
  errors: number;
  bins: Uint32Array;
}

/** One point of a chart. */
export interface HealthPoint {
  /** Epoch ms the bucket starts. */
  t: number;
  rps: number;
  errorsPerSec: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

/** Rolling windows per series (see the file's comment). */
export class HealthWindows {
  private readonly series = new Map<string, Bucket[]>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Counts one request of `name` (an error when `ok` is false) that took `latencyMs`. */
  record(name: string, ok: boolean, latencyMs: number): void {
    const start = Math.floor(this.now() / BUCKET_MS) * BUCKET_MS;
    let buckets = this.series.get(name);
    if (!buckets) this.series.set(name, (buckets = []));
    let b = buckets[buckets.length - 1];
    if (!b || b.start !== start) {
      b = { start, count: 0, errors: 0, bins: new Uint32Array(BINS) };
      buckets.push(b);
      while (buckets.length > 0 && buckets[0]!.start <= start - BUCKETS * BUCKET_MS) buckets.shift();
    }
    b.count++;
    if (!ok) b.errors++;
    b.bins[binOf(latencyMs)]!++;
  }

  /** Every series' points over the last 15 minutes, oldest first, empty buckets included (as zeros). */
  snapshot(): Record<string, HealthPoint[]> {
    const last = Math.floor(this.now() / BUCKET_MS) * BUCKET_MS;
    const out: Record<string, HealthPoint[]> = {};
    for (const [name, buckets] of this.series) {
      const byStart = new Map(buckets.map((b) => [b.start, b]));
      const points: HealthPoint[] = [];
      for (let i = BUCKETS - 1; i >= 0; i--) {
        const t = last - i * BUCKET_MS;
        const b = byStart.get(t);
        // The bucket in progress is divided by the time it has run, not by its width.
        const secs = t === last ? Math.max(1, this.now() - t) / 1000 : BUCKET_MS / 1000;
        points.push({
          t,
          rps: b ? b.count / secs : 0,
          errorsPerSec: b ? b.errors / secs : 0,
          p50Ms: b ? quantile(b, 0.5) : null,
          p99Ms: b ? quantile(b, 0.99) : null,
        });
      }
      out[name] = points;
    }
    return out;
  }
}

function binOf(ms: number): number {
  if (!(ms > MIN_MS)) return 0;
  return Math.min(BINS - 1, Math.ceil(Math.log(ms / MIN_MS) / Math.log(BIN_RATIO)));
}

/** The upper edge of the bin holding the q-quantile of a bucket, ms. */
function quantile(b: Bucket, q: number): number {
  const rank = Math.ceil(q * b.count);
  let seen = 0;
  for (let i = 0; i < BINS; i++) {
    seen += b.bins[i]!;
    if (seen >= rank) return MIN_MS * BIN_RATIO ** i;
  }
  return MIN_MS * BIN_RATIO ** (BINS - 1);
}
