/** Latency samples kept per endpoint. */
export const LATENCY_WINDOW_SIZE = 64;
/** Samples needed before a quantile is reported. */
const MIN_SAMPLES_FOR_QUANTILE = 8;
/** Weight of a new sample in the moving average. */
const EWMA_ALPHA = 0.2;

/** A ring of recent latencies (ms) with a moving average and quantiles. */
export class LatencyWindow {
  private readonly samples: number[] = [];
  private next = 0;
  private ewma: number | undefined;
  /** The samples sorted, kept until the next one arrives (a request asks for p95 and the floor). */
  private sorted: number[] | undefined;

  /** Adds one sample in ms. */
  add(ms: number): void {
    if (this.samples.length < LATENCY_WINDOW_SIZE) this.samples.push(ms);
    else this.samples[this.next] = ms;
    this.next = (this.next + 1) % LATENCY_WINDOW_SIZE;
    this.ewma = this.ewma === undefined ? ms : this.ewma + EWMA_ALPHA * (ms - this.ewma);
    this.sorted = undefined;
  }

  /** True once there are enough samples for quantiles (and for judging what is usual). */
  get settled(): boolean {
    return this.samples.length >= MIN_SAMPLES_FOR_QUANTILE;
  }

  /** Exponentially weighted moving average, ms; undefined before the first sample. */
  meanMs(): number | undefined {
    return this.ewma;
  }

  /** The q-quantile (0..1) of the window, ms; undefined until a few samples exist. */
  quantileMs(q: number): number | undefined {
    if (!this.settled) return undefined;
    const sorted = (this.sorted ??= [...this.samples].sort((a, b) => a - b));
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }
}
