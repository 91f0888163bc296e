/**
 * The broker's queueing delay, measured where Node queues work: how late a short timer fires on the event
 * loop. Every call, decoded request and answer waits in that one queue, so its delay is the time new work
 * waits before the broker even looks at it. Reported as the least lateness since the last read — CoDel's
 * test for a standing queue: a burst that drains within the interval is not overload.
 */

/** How often the loop is timed while calls arrive, ms. */
export const PROBE_INTERVAL_MS = 5;
/** The monitor stops timing the loop after this long without a call, ms (an idle broker is not woken). */
export const IDLE_AFTER_MS = 1000;

/**
 * Where the monitor stands. `idle`: no call lately, no timer runs, the delay reads 0. `timing`: a timer
 * fires every {@link PROBE_INTERVAL_MS} and records how late it ran.
 */
export type QueueDelayState = 'idle' | 'timing';

/** Injected timers (real ones by default), so a test can drive the monitor on virtual time. */
export interface DelayClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): { unref?(): unknown };
}

const REAL_CLOCK: DelayClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
};

/** The event loop's queueing delay (see the file's comment). */
export class QueueDelay {
  private state: QueueDelayState = 'idle';
  private minSinceRead = Infinity;
  private lastCallAt = -Infinity;
  private expectedAt = 0;
  private closed = false;

  constructor(private readonly clock: DelayClock = REAL_CLOCK) {}

  /** A call arrived: time the loop (resumes an idle monitor). */
  busy(): void {
    this.lastCallAt = this.clock.now();
    if (this.state === 'idle' && !this.closed) this.transition('timing');
  }

  /** The least delay since the last read, ms (0 when nothing was timed); starts a new reading. */
  read(): number {
    // No probe fired since the last read while timing: the loop has been blocked at least this long.
    const blocked = this.state === 'timing' ? Math.max(0, this.clock.now() - this.expectedAt) : 0;
    const ms = Number.isFinite(this.minSinceRead) ? this.minSinceRead : blocked;
    this.minSinceRead = Infinity;
    return ms;
  }

  /** Where the monitor stands. */
  get current(): QueueDelayState {
    return this.state;
  }

  /** Stops timing for good. */
  close(): void {
    this.closed = true;
    this.transition('idle');
  }

  /** The one place the state changes: the probe timer runs only while `timing`. */
  private transition(to: QueueDelayState): void {
    if (to === this.state) return;
    this.state = to;
    if (to === 'timing') this.schedule();
  }

  private schedule(): void {
    this.expectedAt = this.clock.now() + PROBE_INTERVAL_MS;
    this.clock.setTimeout(() => this.fired(), PROBE_INTERVAL_MS).unref?.();
  }

  private fired(): void {
    if (this.state !== 'timing') return;
    const now = this.clock.now();
    const late = Math.max(0, now - this.expectedAt);
    if (late < this.minSinceRead) this.minSinceRead = late;
    if (now - this.lastCallAt > IDLE_AFTER_MS) this.transition('idle');
    else this.schedule();
  }
}
