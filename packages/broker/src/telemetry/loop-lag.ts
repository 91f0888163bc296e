import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** Sampling interval of the event-loop delay histogram, ms. */
const RESOLUTION_MS = 50;
/**
 * p90 lag above which a broker counts as saturated. Measured on the bench machine (2 cores): an entry
 * broker answering sequential aggregates lags ~1 ms at p90; saturated by 128 concurrent ones, 13-29 ms.
 */
export const SATURATED_LAG_MS = 10;

/**
 * Where the monitor stands. `off`: not started, or closed. `paused`: no call arrived in the last window, so
 * nothing is measured and no timer runs (an idle broker is not woken 20 times a second to time its own
 * loop); the lag reads 0. `measuring`: the histogram samples the loop every RESOLUTION_MS and each window
 * ends with its p90. The first call after a pause resumes measuring.
 */
export type LagState = 'off' | 'paused' | 'measuring';

/**
 * How late the broker's event loop runs timers: the p90 over the last window (`p90Ms`), near 0 when the
 * broker keeps up, tens of ms when it is saturated (its own CPU, or a machine short of cores). A slow
 * answer while the broker itself lags says "we are busy", not "that peer is slow". Measured only while
 * calls arrive ({@link busy}): saturation matters only to calls, and sampling an idle loop was a third of
 * an idle broker's CPU.
 */
export class LoopLag {
  private readonly histogram: IntervalHistogram;
  private state: LagState = 'off';
  private timer: NodeJS.Timeout | undefined;
  private lagMs = 0;
  /** A call arrived in the current window. */
  private called = false;

  constructor(
    private readonly windowMs = 1000,
    /** Called when the broker becomes saturated or stops being saturated. */
    private readonly onChange?: (saturated: boolean, p90Ms: number) => void,
  ) {
    this.histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  }

  /** Starts the monitor (a broker does once it serves: start-up work blocks the loop and says nothing of load). */
  start(): this {
    if (this.state === 'off') this.transition('paused');
    return this;
  }

  /** A call arrived: measure this window (resumes a paused monitor). */
  busy(): void {
    this.called = true;
    if (this.state === 'paused') this.transition('measuring');
  }

  /** p90 event-loop lag over the last window, ms (0 while paused). */
  get p90Ms(): number {
    return this.lagMs;
  }

  /** True while the last window's p90 lag is above {@link SATURATED_LAG_MS}. */
  saturated(): boolean {
    return this.lagMs > SATURATED_LAG_MS;
  }

  /** Where the monitor stands. */
  get current(): LagState {
    return this.state;
  }

  /** Stops measuring. */
  close(): void {
    this.transition('off');
  }

  /** The one place the state changes: the histogram and the window timer run only while measuring. */
  private transition(to: LagState): void {
    if (to === this.state) return;
    this.state = to;
    if (to === 'measuring') {
      this.histogram.reset();
      this.histogram.enable();
      this.timer = setInterval(() => this.endWindow(), this.windowMs).unref();
      return;
    }
    clearInterval(this.timer);
    this.timer = undefined;
    this.histogram.disable();
    this.lagMs = 0;
  }

  /** A window ended: its p90 lag; no call in it pauses the monitor. */
  private endWindow(): void {
    const h = this.histogram;
    const was = this.saturated();
    // Each sample is the whole interval between two checks; the lag is what comes on top of it.
    this.lagMs = h.count > 0 ? Math.max(0, h.percentile(90) / 1e6 - RESOLUTION_MS) : 0;
    h.reset();
    if (!this.called) this.transition('paused');
    this.called = false;
    if (this.saturated() !== was) this.onChange?.(!was, this.lagMs);
  }
}
