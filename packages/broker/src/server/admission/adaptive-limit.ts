/**
 * A concurrency limit that follows measured delay (the idea of Netflix's Gradient2 and Envoy's adaptive
 * concurrency, with CoDel's "standing queue" test): once per interval it looks at two signals —
 * the broker's own queueing delay (how late its event loop ran, the least of the interval: a queue that
 * did not drain) and the latency of the work it admitted, against that latency unloaded — and lowers the
 * limit multiplicatively when either says work waits, or raises it additively when the limit was in use
 * and nothing waits. Pure: the clock and the delay reading are injected, so tests run on virtual time.
 */

/** How often the limit is re-evaluated, ms. */
export const LIMIT_INTERVAL_MS = 100;
/**
 * Smallest factor applied to the limit when work waits (one step per interval): the step is the ratio of
 * the tolerated to the measured delay (or latency), so a queue just past its target trims the limit a
 * little and a long one cuts it by up to this much. Measured on the 2-core bench: a fixed ×0.85 step on
 * every noisy interval kept the limit at a third of what the federation could do.
 */
export const DECREASE_FACTOR = 0.5;
/**
 * The Aggregates' limit, while not in use, is kept within this many times the most in flight lately (the
 * validation window): a limit never reached is not trusted. Measured on the overload test: a 512-pod limit
 * met a step to 3× capacity from idle, admitted 128 Aggregates at once, and a fifth of them missed 300 ms.
 */
export const UNUSED_HEADROOM = 2;
/**
 * …but never below this share of the initial limit: a quiet broker still takes a modest burst whole
 * (128 pods by default: 21 Aggregates of 6 pods) rather than refusing all but a couple of its calls.
 */
export const UNUSED_FLOOR_SHARE = 0.25;
/** How far back "lately" goes for {@link UNUSED_HEADROOM}, ms. */
export const VALIDATION_WINDOW_MS = 10_000;
/** The deepest one cut goes (× what was in flight), when the delivery rate says the queue is that long. */
export const DEEPEST_CUT = 0.2;
/** Share of the limit added per interval when the limit was in use and nothing waited (at least 1). */
export const INCREASE_SHARE = 0.1;
/** Share added per interval instead while latency is within {@link FREE_LATENCY} × its unloaded level. */
export const FAST_INCREASE_SHARE = 0.25;
/** Latency up to this many times its unloaded level counts as no queueing at all. */
export const FREE_LATENCY = 1.25;
/** After a cut, the limit holds for this many intervals (its effect is not yet measured). */
export const SETTLE_INTERVALS = 2;
/** The limit counts as in use when the peak in flight in an interval reached this share of it. */
export const IN_USE_SHARE = 0.6;
/** The unloaded latency is the least interval median seen in this window, ms (it forgets slowly). */
export const BASELINE_WINDOW_MS = 30_000;
/** Most the baseline may grow when its window expires (a federation that became slower is learnt in steps). */
export const BASELINE_GROWTH = 1.25;
/**
 * The limit is lowered only when the interval's peak in flight was at least this many times its minimum:
 * below, the broker's own work is too little to be why it waits (measured on the 2-core bench: at a quarter
 * of capacity, a busy machine's scheduler alone made the loop late and the limit refused light load).
 */
export const OWN_LOAD_FACTOR = 2;
/**
 * An interval's latency counts (for the baseline and as a signal) only with at least this many answers: a
 * lucky one or two set a baseline no loaded interval could meet, and one slow request lowered the limit.
 */
export const MIN_BASELINE_SAMPLES = 5;
/**
 * Weight of a new interval's median in the smoothed latency the limit follows: one interval's median of
 * ten answers on a busy machine swings by half (measured on the 2-core bench), and each swing past the
 * tolerance cut the limit.
 */
export const SMOOTHING = 0.4;
/** Latency samples kept per interval, at most (the median of a reservoir). */
const MAX_SAMPLES = 256;

/**
 * What the limit did in its last interval. `idle`: nothing admitted, unchanged. `steady`: unchanged (in use
 * below the limit, or latency between halfway to its tolerance and the tolerance). `raised`: in use near the limit with no queueing: one step up. `lowered`: queueing delay
 * above target or latency above tolerance: one step down.
 */
export type LimitVerdict = 'idle' | 'steady' | 'raised' | 'lowered';

/** Settings of an {@link AdaptiveLimit}. */
export interface AdaptiveLimitOptions {
  /** The limit before anything is measured. */
  initial: number;
  /** The limit never falls below this. */
  min: number;
  /** The limit never rises above this (the fixed hard cap). */
  max: () => number;
  /** Queueing delay tolerated before the limit falls, ms. */
  targetDelayMs: number;
  /** Latency may grow to this many times its unloaded level before the limit falls. */
  latencyTolerance: number;
  /** The clock, ms. */
  now: () => number;
  /** The least queueing delay seen since the last call, ms (reset by the call). */
  queueDelayMs: () => number;
  /**
   * While not in use, the limit is kept within this many times the most in flight lately (undefined: not
   * kept; see {@link UNUSED_HEADROOM}).
   */
  unusedHeadroom?: number;
  /** Work in flight now (an interval with work still in flight is not idle). */
  inFlight?: () => number;
}

/** An adaptive limit on work in flight (see the file's comment). */
export class AdaptiveLimit {
  private limitValue: number;
  private intervalStart: number;
  private samples: number[] = [];
  private peakInFlight = 0;
  /** The interval medians, smoothed (undefined after an idle interval or a cut). */
  private smoothed: number | undefined;
  /** The most in flight in the current and the previous half of the validation window. */
  private peakBucket = 0;
  private peakPrevBucket = 0;
  private peakBucketAt = -Infinity;
  /** Units of work answered in this interval (all of them, admitted before a cut or after). */
  private delivered = 0;
  /** When the limit was last lowered (-Infinity: never). */
  private loweredAt = -Infinity;
  /** The least interval median seen, with when it was seen (forgotten after {@link BASELINE_WINDOW_MS}). */
  private baseline: { ms: number; at: number } | undefined;
  /** What the last evaluation decided, with its inputs (for metrics and tests). */
  last: { verdict: LimitVerdict; queueDelayMs: number; latencyMs: number | undefined } = {
    verdict: 'idle',
    queueDelayMs: 0,
    latencyMs: undefined,
  };

  constructor(private readonly opts: AdaptiveLimitOptions) {
    this.limitValue = Math.max(opts.min, Math.min(opts.initial, opts.max()));
    this.intervalStart = opts.now();
  }

  /** The limit in force now (whole units of work). */
  get limit(): number {
    this.maybeEvaluate();
    return Math.floor(this.limitValue);
  }

  /** The unloaded latency it compares with, ms (undefined before the first measured interval). */
  get baselineMs(): number | undefined {
    return this.baseline?.ms;
  }

  /** Work in flight now (after an admission): tracks the interval's peak. */
  noteInFlight(inFlight: number): void {
    if (inFlight > this.peakInFlight) this.peakInFlight = inFlight;
  }

  /** Admitted work of `units` (pods) finished after `latencyMs`. */
  sample(latencyMs: number, units = 1): void {
    this.delivered += units;
    // Work admitted before the last cut says nothing of the new limit (it is why the limit was cut).
    if (this.opts.now() - latencyMs < this.loweredAt) return this.maybeEvaluate();
    if (this.samples.length < MAX_SAMPLES) this.samples.push(latencyMs);
    else this.samples[Math.floor(Math.random() * MAX_SAMPLES)] = latencyMs;
    this.maybeEvaluate();
  }

  /** Re-evaluates once an interval has passed (called on every read and sample; no timer of its own). */
  private maybeEvaluate(): void {
    const now = this.opts.now();
    if (now - this.intervalStart < LIMIT_INTERVAL_MS) return;
    this.evaluate(now);
  }

  /** The one place the limit changes. */
  private evaluate(now: number): void {
    const queueDelayMs = this.opts.queueDelayMs();
    const latencyMs = this.smoothedLatency();
    const inUse = this.peakInFlight >= this.limitValue * IN_USE_SHARE;
    const base = this.updateBaseline(latencyMs, now, inUse);
    // Latency speaks only while the limit is in use: a dead peer's failover also makes answers slow, and
    // refusing work a broker has room for sheds nothing it could not do (a fresh-check run refused
    // Aggregates during a representative's SIGKILL at a sixth of the limit).
    const tolerated = base === undefined || !inUse ? undefined : base * this.opts.latencyTolerance;
    // How far each signal is past what is tolerated: 1 when within it.
    const factor = Math.max(
      DECREASE_FACTOR,
      Math.min(
        1,
        queueDelayMs > this.opts.targetDelayMs ? this.opts.targetDelayMs / queueDelayMs : 1,
        latencyMs !== undefined && tolerated !== undefined && latencyMs > tolerated
          ? tolerated / latencyMs
          : 1,
      ),
    );
    // One cut, then wait for its effect: the signals lag (the answers of work admitted before the cut, a
    // queueing delay read over two intervals), and cutting again on them took a limit from 288 to 18 in
    // four intervals on the bench, then two seconds to climb back while nearly everything was refused.
    const settling = now - this.loweredAt <= SETTLE_INTERVALS * LIMIT_INTERVAL_MS;
    // Work this small is not what makes the broker wait (another process, a GC): lowering would only refuse;
    // waiting with too little of its own work to be the cause, it is neither lowered nor raised.
    const waits = factor < 1 && this.peakInFlight >= this.opts.min * OWN_LOAD_FACTOR;
    const othersWait = factor < 1 && !waits;
    // A band between raising and lowering: latency already past halfway to its tolerance holds the limit
    // (the signal lags by a round trip, and raising into it overshot into missed deadlines).
    const roomToGrow =
      latencyMs === undefined ||
      base === undefined ||
      latencyMs <= base * (1 + (this.opts.latencyTolerance - 1) / 2);
    const validated = this.validatedLimit(now);
    let verdict: LimitVerdict;
    if (this.samples.length === 0 && this.peakInFlight === 0) {
      verdict = 'idle';
      this.smoothed = undefined;
      // An idle broker forgets a limit it has not used lately: a burst after a quiet spell is not all
      // admitted at the limit of the busy spell before it.
      this.limitValue = Math.min(this.limitValue, validated);
    } else if (settling || othersWait) verdict = 'steady';
    else if (waits) {
      verdict = 'lowered';
      this.limitValue = Math.max(this.opts.min, this.cutFrom(now, factor, base));
      this.loweredAt = now;
      this.smoothed = undefined;
    } else if (inUse && roomToGrow) {
      verdict = 'raised';
      // Faster while answers come about as fast as unloaded: a limit cut by a transient climbs back in a
      // few intervals rather than a second or two.
      const free = latencyMs !== undefined && base !== undefined && latencyMs <= base * FREE_LATENCY;
      const step = free ? FAST_INCREASE_SHARE : INCREASE_SHARE;
      this.limitValue = Math.min(this.opts.max(), this.limitValue + Math.max(1, this.limitValue * step));
    } else if (!inUse && this.limitValue < Math.min(this.opts.initial, validated)) {
      // Nothing waits and the load is light: relax back towards what recent load has shown it can use, so
      // a burst after a busy spell is not refused for a limit the busy spell set.
      verdict = 'raised';
      this.limitValue = Math.min(this.opts.initial, validated, this.limitValue * (1 + INCREASE_SHARE));
    } else if (!inUse && this.limitValue > validated) {
      // A limit far above anything used lately was never measured: a burst would all be admitted at once
      // and queue past its deadlines before a single answer could lower it (RFC 7661's idea for TCP).
      verdict = 'lowered';
      this.limitValue = validated;
    } else verdict = 'steady';
    this.limitValue = Math.min(this.limitValue, this.opts.max());
    this.last = { verdict, queueDelayMs, latencyMs };
    this.samples = [];
    this.delivered = 0;
    this.peakInFlight = this.opts.inFlight?.() ?? 0;
    this.intervalStart = now;
  }

  /**
   * The interval's median latency, smoothed over intervals; undefined with too few answers (a median of a
   * few says more about those requests — a slow operation, a client's long timeout — than the broker).
   */
  private smoothedLatency(): number | undefined {
    if (this.samples.length < MIN_BASELINE_SAMPLES) return undefined;
    const measured = median(this.samples);
    this.smoothed =
      this.smoothed === undefined ? measured : this.smoothed + SMOOTHING * (measured - this.smoothed);
    return this.smoothed;
  }

  /** The most the limit may be while not in use (see {@link UNUSED_HEADROOM}); Infinity when not kept. */
  private validatedLimit(now: number): number {
    const headroom = this.opts.unusedHeadroom;
    if (headroom === undefined) return Infinity;
    const floor = Math.max(this.opts.min, this.opts.initial * UNUSED_FLOOR_SHARE);
    return Math.max(floor, headroom * this.recentPeak(now));
  }

  /** The most in flight in any interval of the last {@link VALIDATION_WINDOW_MS} or so (two buckets). */
  private recentPeak(now: number): number {
    if (now - this.peakBucketAt >= VALIDATION_WINDOW_MS / 2) {
      this.peakPrevBucket = now - this.peakBucketAt >= VALIDATION_WINDOW_MS ? 0 : this.peakBucket;
      this.peakBucket = 0;
      this.peakBucketAt = now;
    }
    this.peakBucket = Math.max(this.peakBucket, this.peakInFlight);
    return Math.max(this.peakBucket, this.peakPrevBucket);
  }

  /**
   * Where a cut lands: from what was in flight (not from a limit far above it), by `factor`, and lower when
   * Little's law says so — the work the interval delivered per ms × the tolerated latency is what can be
   * in flight without waiting. After a step in load the answers measured are of work admitted before the
   * queue grew, so `factor` alone under-cuts (a step to 3× capacity from a 512-pod limit took four halvings
   * and 1.2 s, missing deadlines all the while); the delivery rate is what the federation can do now.
   */
  private cutFrom(now: number, factor: number, base: number | undefined): number {
    const from = Math.min(this.limitValue, this.peakInFlight) * factor;
    const elapsed = now - this.intervalStart;
    if (base === undefined || this.delivered === 0 || elapsed <= 0) return from;
    const sustainable = (this.delivered / elapsed) * base * this.opts.latencyTolerance;
    return Math.min(from, Math.max(from * DEEPEST_CUT, sustainable));
  }

  /**
   * The unloaded latency: the least interval median, kept for {@link BASELINE_WINDOW_MS}; then the median
   * of the next interval whose load was light (the limit not in use) replaces it, at most
   * {@link BASELINE_GROWTH} times the old (a new site far away is learnt). Never from a loaded interval: a
   * baseline that grew while the limit held the load (1.25× every 30 s) let latency climb with it, and
   * a long overload ended up admitting at 500 ms what it had admitted at 140.
   */
  private updateBaseline(latencyMs: number | undefined, now: number, inUse: boolean): number | undefined {
    if (latencyMs === undefined) return this.baseline?.ms;
    if (!this.baseline || latencyMs <= this.baseline.ms) this.baseline = { ms: latencyMs, at: now };
    else if (now - this.baseline.at > BASELINE_WINDOW_MS && !inUse)
      // Forgets slowly: a loaded median cannot become the baseline at once and let the limit creep up.
      this.baseline = { ms: Math.min(latencyMs, this.baseline.ms * BASELINE_GROWTH), at: now };
    return this.baseline.ms;
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
