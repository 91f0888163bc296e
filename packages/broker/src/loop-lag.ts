import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** Sampling interval of the event-loop delay histogram, ms. */
const RESOLUTION_MS = 50;
/**
 * p90 lag above which a broker counts as saturated. Measured on the bench machine (2 cores): an entry
 * broker answering sequential aggregates lags ~1 ms at p90; saturated by 128 concurrent ones, 13-29 ms.
 */
export const SATURATED_LAG_MS = 10;

/**
 * How late the broker's event loop runs timers: the p90 over the last window (`p90Ms`), near 0 when the
 * broker keeps up, tens of ms when it is saturated (its own CPU, or a machine short of cores). A slow
 * answer while the broker itself lags says "we are busy", not "that peer is slow".
 */
export class LoopLag {
  private readonly histogram: IntervalHistogram;
  private timer: NodeJS.Timeout | undefined;
  private lagMs = 0;

  constructor(
    private readonly windowMs = 1000,
    /** Called when the broker becomes saturated or stops being saturated. */
    private readonly onChange?: (saturated: boolean, p90Ms: number) => void,
  ) {
    this.histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  }

  /** Starts measuring (a broker does once it serves: start-up work blocks the loop and says nothing of load). */
  start(): this {
    if (this.timer) return this;
    this.histogram.enable();
    this.timer = setInterval(() => {
      // Each sample is the whole interval between two checks; the lag is what comes on top of it.
      const h = this.histogram;
      const was = this.saturated();
      this.lagMs = h.count > 0 ? Math.max(0, h.percentile(90) / 1e6 - RESOLUTION_MS) : 0;
      h.reset();
      if (this.saturated() !== was) this.onChange?.(!was, this.lagMs);
    }, this.windowMs);
    this.timer.unref();
    return this;
  }

  /** p90 event-loop lag over the last window, ms. */
  get p90Ms(): number {
    return this.lagMs;
  }

  /** True while the last window's p90 lag is above {@link SATURATED_LAG_MS}. */
  saturated(): boolean {
    return this.lagMs > SATURATED_LAG_MS;
  }

  /** Stops measuring. */
  close(): void {
    clearInterval(this.timer);
    this.histogram.disable();
  }
}
