/**
 * The broker's queueing delay, measured where Node queues work: how late a short timer fires on the event
 * loop. Every call, decoded request and answer waits in that one queue, so its delay is the time new work
 * waits before the broker even looks at it. Reported as the least lateness since the last read — CoDel's
 * test for a standing queue: a burst that drains within the interval is not overload.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';

/** How often the loop is timed while calls arrive, ms. */
export const PROBE_INTERVAL_MS = 5;
/** The monitor stops timing the loop after this long without a call, ms (an idle broker is not woken). */
export const IDLE_AFTER_MS = 1000;

/**
 * Where the monitor stands. `idle`: no call lately, nothing runs, the delay reads 0. `timing`: a probe
 * (see {@link LoopProbe}) samples how late a timer runs every {@link PROBE_INTERVAL_MS}.
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

/**
 * How the loop's lateness is sampled while timing: each sample is how late a {@link PROBE_INTERVAL_MS}
 * timer ran. `takeMin` is the least since the last take (undefined when none ran: the loop was blocked).
 */
export interface LoopProbe {
  start(): void;
  stop(): void;
  takeMin(): number | undefined;
}

/**
 * libuv's own repeating timer (`perf_hooks.monitorEventLoopDelay`): no JavaScript runs per sample. A
 * JavaScript timer every 5 ms on every busy broker was ~4% of its CPU. The histogram records each
 * interval between ticks; the lateness is that less the interval.
 */
export function histogramProbe(): LoopProbe {
  const h = monitorEventLoopDelay({ resolution: PROBE_INTERVAL_MS });
  return {
    start: () => h.enable(),
    stop: () => h.disable(),
    takeMin: () => {
      const n = h.count;
      const min = h.min / 1e6 - PROBE_INTERVAL_MS;
      h.reset();
      return n > 0 ? Math.max(0, min) : undefined;
    },
  };
}

/** A JavaScript timer on `clock` (virtual time in tests): the same samples, one callback each. */
export function timerProbe(clock: DelayClock): LoopProbe {
  let on = false;
  let expectedAt = 0;
  let min: number | undefined;
  const schedule = () => {
    expectedAt = clock.now() + PROBE_INTERVAL_MS;
    clock.setTimeout(fired, PROBE_INTERVAL_MS).unref?.();
  };
  const fired = () => {
    if (!on) return;
    const late = Math.max(0, clock.now() - expectedAt);
    if (min === undefined || late < min) min = late;
    schedule();
  };
  return {
    start: () => {
      if (on) return;
      on = true;
      schedule();
    },
    stop: () => {
      on = false;
    },
    takeMin: () => {
      const m = min;
      min = undefined;
      return m;
    },
  };
}

/** The event loop's queueing delay (see the file's comment). */
export class QueueDelay {
  private state: QueueDelayState = 'idle';
  private lastCallAt = -Infinity;
  private lastReadAt: number;
  private closed = false;
  private readonly probe: LoopProbe;

  constructor(
    private readonly clock: DelayClock = REAL_CLOCK,
    probe?: LoopProbe,
  ) {
    this.probe = probe ?? (clock === REAL_CLOCK ? histogramProbe() : timerProbe(clock));
    this.lastReadAt = clock.now();
  }

  /** A call arrived: time the loop (resumes an idle monitor). */
  busy(): void {
    this.lastCallAt = this.clock.now();
    if (this.state === 'idle' && !this.closed) this.transition('timing');
  }

  /** The least delay since the last read, ms (0 when nothing was timed); starts a new reading. */
  read(): number {
    const now = this.clock.now();
    const min = this.probe.takeMin();
    // No probe ran since the last read while timing: the loop has been blocked about that long.
    const blocked = this.state === 'timing' ? Math.max(0, now - this.lastReadAt - PROBE_INTERVAL_MS) : 0;
    this.lastReadAt = now;
    return min ?? blocked;
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

  /** The one place the state changes: the probe runs only while `timing`, watched for idleness. */
  private transition(to: QueueDelayState): void {
    if (to === this.state) return;
    this.state = to;
    if (to === 'timing') {
      this.probe.start();
      this.watchIdle();
    } else this.probe.stop();
  }

  /** Once a second while timing: no call for {@link IDLE_AFTER_MS} stops it (an idle broker is not woken). */
  private watchIdle(): void {
    this.clock
      .setTimeout(() => {
        if (this.state !== 'timing') return;
        if (this.clock.now() - this.lastCallAt >= IDLE_AFTER_MS) this.transition('idle');
        else this.watchIdle();
      }, IDLE_AFTER_MS)
      .unref?.();
  }
}
