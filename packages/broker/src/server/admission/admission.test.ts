import {
  AdaptiveLimit,
  BASELINE_GROWTH,
  DECREASE_FACTOR,
  DEEPEST_CUT,
  FAST_INCREASE_SHARE,
  LIMIT_INTERVAL_MS,
  SETTLE_INTERVALS,
} from './adaptive-limit';
import { Admission, isRefusal, type Refusal, type Ticket } from './admission';
import { QueueDelay, PROBE_INTERVAL_MS, IDLE_AFTER_MS } from './queue-delay';

/** A virtual clock with timers, for the queue-delay monitor. */
function virtualClock() {
  let now = 0;
  const timers: { at: number; fn: () => void }[] = [];
  return {
    now: () => now,
    setTimeout: (fn: () => void, ms: number) => {
      timers.push({ at: now + ms, fn });
      return {};
    },
    /** Advances to `to`; each timer fires `lateMs` after it was due (a busy loop). */
    advance(by: number, lateMs = 0) {
      const end = now + by;
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        const t = timers[0];
        if (!t || t.at + lateMs > end) break;
        timers.shift();
        now = t.at + lateMs;
        t.fn();
      }
      now = end;
    },
    pending: () => timers.length,
  };
}

const SETTINGS = {
  adaptive: true,
  targetDelayMs: 5,
  latencyTolerance: 2,
  initialPods: 60,
  minPods: 6,
};

function admissionOn(clock: { now: () => number }, delay: { ms: number }, settings = SETTINGS) {
  return new Admission({
    settings: () => settings,
    hardCaps: () => ({ aggregates: 512, federation: 2048 }),
    defaultCost: () => 6,
    clients: [
      { name: 'vip', weight: 3 },
      { name: 'capped', weight: 1, maxInFlight: 2 },
    ],
    now: clock.now,
    queueDelay: {
      busy: () => undefined,
      read: () => delay.ms,
      close: () => undefined,
    } as unknown as QueueDelay,
  });
}

describe('AdaptiveLimit (virtual time)', () => {
  const make = (delay: { ms: number }, clock: { t: number }) =>
    new AdaptiveLimit({
      initial: 100,
      min: 10,
      max: () => 1000,
      targetDelayMs: 5,
      latencyTolerance: 2,
      now: () => clock.t,
      queueDelayMs: () => delay.ms,
    });
  /**
   * One interval on virtual time: `inFlight` at its peak, five answers of `ms` each, then the read that
   * closes it (the evaluation). Returns the limit after it.
   */
  const interval = (l: AdaptiveLimit, clock: { t: number }, inFlight: number, ms: number) => {
    l.noteInFlight(inFlight);
    for (let i = 0; i < 5; i++) l.sample(ms);
    clock.t += LIMIT_INTERVAL_MS;
    return l.limit;
  };

  it('falls by a step per settled interval while the queueing delay stays above target, never below its minimum', () => {
    const clock = { t: 0 };
    const delay = { ms: 20 };
    const l = make(delay, clock);
    const seen: number[] = [];
    for (let i = 0; i < 30; i++) {
      l.noteInFlight(l.limit); // work keeps the limit full
      clock.t += LIMIT_INTERVAL_MS;
      l.sample(50);
      seen.push(l.limit);
    }
    // 20 ms against a 5 ms target: the largest step down, then held while its effect is measured
    // (SETTLE_INTERVALS), then the next step.
    expect(seen[0]).toBe(Math.floor(100 * DECREASE_FACTOR));
    expect(seen.slice(1, SETTLE_INTERVALS + 1)).toEqual(Array(SETTLE_INTERVALS).fill(seen[0]));
    expect(seen[SETTLE_INTERVALS + 1]).toBe(Math.floor(100 * DECREASE_FACTOR * DECREASE_FACTOR));
    // Down to where its own work is too little to be the cause (twice the minimum of 10), never below 10.
    expect(seen[29]).toBeGreaterThanOrEqual(10);
    expect(seen[29]).toBeLessThan(20);
  });

  it('is not lowered by one slow answer: latency speaks only with five answers in an interval', () => {
    const clock = { t: 0 };
    const l = make({ ms: 0 }, clock);
    l.noteInFlight(100);
    for (let i = 0; i < 5; i++) l.sample(50);
    clock.t += LIMIT_INTERVAL_MS;
    l.sample(50);
    const before = l.limit;
    l.noteInFlight(100);
    clock.t += LIMIT_INTERVAL_MS;
    l.sample(1000); // a request whose own operation took a second
    expect(l.limit).toBeGreaterThanOrEqual(before);
  });

  it('steps down from what is in flight, not from a limit far above it', () => {
    const clock = { t: 0 };
    const l = make({ ms: 50 }, clock);
    l.noteInFlight(40);
    clock.t += LIMIT_INTERVAL_MS;
    l.sample(50);
    expect(l.limit).toBe(Math.floor(40 * DECREASE_FACTOR));
  });

  it('steps down in proportion to how far the delay is past its target', () => {
    const clock = { t: 0 };
    const l = make({ ms: 6 }, clock);
    l.noteInFlight(100);
    clock.t += LIMIT_INTERVAL_MS;
    l.sample(50);
    expect(l.limit).toBe(Math.floor((100 * 5) / 6));
  });

  it('rises while in use with no queueing, and stays put when the load is below it (app-limited)', () => {
    const clock = { t: 0 };
    const l = make({ ms: 0 }, clock);
    for (let i = 0; i < 5; i++) {
      l.noteInFlight(l.limit);
      clock.t += LIMIT_INTERVAL_MS;
      l.sample(50);
    }
    const raised = l.limit;
    expect(raised).toBeGreaterThan(100);
    for (let i = 0; i < 5; i++) {
      l.noteInFlight(10);
      clock.t += LIMIT_INTERVAL_MS;
      l.sample(50);
    }
    expect(l.limit).toBe(raised);
    expect(l.last.verdict).toBe('steady');
  });

  it('falls when admitted latency grows past tolerance × its unloaded level, even without local queueing', () => {
    const clock = { t: 0 };
    const l = make({ ms: 0 }, clock);
    const before = interval(l, clock, 100, 50); // five answers: enough to set the baseline
    expect(l.baselineMs).toBe(50);
    // smoothed: 50 + 0.4 × 150 = 110, past 2 × 50
    expect(interval(l, clock, 100, 200)).toBeLessThan(before);
    expect(l.last.verdict).toBe('lowered');
  });

  it('keeps its unloaded latency through a long overload, and learns a slower one only while light', () => {
    const clock = { t: 0 };
    const l = make({ ms: 0 }, clock);
    interval(l, clock, 100, 50);
    expect(l.baselineMs).toBe(50);
    // 35 s with the limit in use and answers at 90 ms (within 2 × 50): the baseline does not follow them.
    for (let i = 0; i < 350; i++) interval(l, clock, l.limit, 90);
    expect(l.baselineMs).toBe(50);
    // A light interval past the window: a slower federation is learnt, a step at a time.
    interval(l, clock, 1, 90);
    expect(l.baselineMs).toBe(50 * BASELINE_GROWTH);
  });

  it('cuts once and waits for its effect: slow answers of work admitted before the cut do not cut again', () => {
    const clock = { t: 0 };
    const l = make({ ms: 0 }, clock);
    interval(l, clock, 100, 50);
    const cut = interval(l, clock, 100, 300); // smoothed 150, past 2 × 50: the cut
    expect(l.last.verdict).toBe('lowered');
    expect(cut).toBeLessThan(100);
    // The work admitted before the cut keeps answering slowly (each took 300 ms, so began before it): held
    // while the cut settles, then raised a step while nothing new is measured.
    for (let i = 0; i < SETTLE_INTERVALS; i++) expect(interval(l, clock, cut, 300)).toBe(cut);
    // Work admitted since answers at the unloaded latency: the limit climbs by the fast step.
    const before = l.limit;
    expect(interval(l, clock, before, 50)).toBeGreaterThanOrEqual(
      Math.floor(before * (1 + FAST_INCREASE_SHARE)),
    );
    expect(l.last.verdict).toBe('raised');
  });

  it("cuts to what the delivery rate sustains (Little's law), not just by a factor, after a step in load", () => {
    const clock = { t: 0 };
    const l = make({ ms: 0 }, clock);
    interval(l, clock, 100, 50); // unloaded: 50 ms
    // 100 units in flight, 5 answered in 100 ms, each after 300 ms: 0.05 a ms × 2 × 50 ms sustains 5.
    expect(interval(l, clock, 100, 300)).toBe(Math.floor(100 * (100 / 150) * DEEPEST_CUT)); // as deep as one cut goes
    expect(l.last.verdict).toBe('lowered');
  });

  it('keeps an unused limit within twice the most in flight lately (not below a quarter of its initial), climbs when a step uses it, forgets it when idle', () => {
    const clock = { t: 0 };
    const l = new AdaptiveLimit({
      initial: 100,
      min: 10,
      max: () => 1000,
      targetDelayMs: 5,
      latencyTolerance: 2,
      unusedHeadroom: 2,
      now: () => clock.t,
      queueDelayMs: () => 0,
    });
    // 100 was never used: a burst would all be admitted at once. Twice 12, but not below a quarter of 100.
    expect(interval(l, clock, 12, 50)).toBe(25);
    expect(interval(l, clock, 12, 50)).toBe(25);
    // A step in load fills it: in use, answers as fast as unloaded, so it climbs by the fast step.
    expect(interval(l, clock, 25, 50)).toBe(31);
    expect(interval(l, clock, 31, 50)).toBe(39);
    // A busy spell at 60, then 11 s of nothing: the limit it earned is forgotten by the first read after.
    for (let i = 0; i < 5; i++) interval(l, clock, l.limit, 50);
    expect(l.limit).toBeGreaterThan(60);
    clock.t += 11_000;
    expect(l.limit).toBe(25);
    expect(l.last.verdict).toBe('idle');
  });

  it('follows latency smoothed over intervals: one noisy interval past tolerance does not lower it', () => {
    const clock = { t: 0 };
    const l = make({ ms: 0 }, clock);
    const before = interval(l, clock, 100, 50);
    // one interval's median at 2.4 × 50; smoothed 78
    expect(interval(l, clock, 100, 120)).toBeGreaterThanOrEqual(before);
    expect(l.last.verdict).not.toBe('lowered');
  });
});

describe('QueueDelay (virtual time)', () => {
  it('reads the least lateness of its probes since the last read, and stops timing when calls stop', () => {
    const clock = virtualClock();
    const q = new QueueDelay(clock);
    expect(q.current).toBe('idle');
    q.busy();
    expect(q.current).toBe('timing');
    clock.advance(100, 0);
    expect(q.read()).toBe(0);
    clock.advance(100, 12);
    expect(q.read()).toBe(12);
    clock.advance(IDLE_AFTER_MS + 10 * PROBE_INTERVAL_MS);
    expect(q.current).toBe('idle');
    expect(clock.pending()).toBe(0);
  });

  it('reads a loop blocked past the read as blocked that long (no probe fired)', () => {
    const clock = virtualClock();
    const q = new QueueDelay(clock);
    q.busy();
    q.read();
    clock.advance(300, 1000); // no timer can fire: they are all 1 s late
    expect(q.read()).toBeGreaterThanOrEqual(300 - PROBE_INTERVAL_MS);
  });
});

describe('QueueDelay on the real event loop (libuv histogram)', () => {
  it('reads a loop held 150 ms as at least 100 ms late', async () => {
    const q = new QueueDelay();
    try {
      q.busy();
      await new Promise((r) => setTimeout(r, 20));
      q.read();
      const until = performance.now() + 150;
      while (performance.now() < until); // holds the loop
      await new Promise((r) => setImmediate(r)); // after the timers phase that ran late
      expect(q.read()).toBeGreaterThanOrEqual(100);
    } finally {
      q.close();
    }
  });
});

describe('Admission', () => {
  it('refuses past the limit at once with a reason and a pushback, and admits again once work is answered', () => {
    const clock = { now: () => t };
    let t = 0;
    const a = admissionOn(clock, { ms: 0 });
    const tickets: Ticket[] = [];
    for (let i = 0; i < 10; i++) {
      const d = a.admit('aggregate', 'heavy', undefined);
      expect(isRefusal(d)).toBe(false);
      tickets.push(d as Ticket);
    }
    const refused = a.admit('aggregate', 'heavy', undefined) as Refusal;
    expect(refused.reason).toBe('limit');
    expect(refused.message).toMatch(/60 of 60 pods in flight; retry after \d+ ms/);
    expect(refused.pushbackMs).toBeGreaterThanOrEqual(20);
    t += 10;
    tickets.pop()!.release();
    expect(isRefusal(a.admit('aggregate', 'heavy', undefined))).toBe(false);
  });

  it('weighs an Aggregate by the pods its plan asks once planned', () => {
    let t = 0;
    const a = admissionOn({ now: () => t }, { ms: 0 });
    const small: Ticket[] = [];
    for (
      let d = a.admit('aggregate', 'heavy', undefined);
      !isRefusal(d);
      d = a.admit('aggregate', 'heavy', undefined)
    ) {
      d.setCost(2); // its plan asks 2 of the federation's 6 pods
      small.push(d);
    }
    // 28 Aggregates of 2 pods where 10 of 6 fit: each is admitted at 6 (before it is planned), then weighs 2.
    expect(small).toHaveLength(28);
    expect(a.inFlight('aggregate')).toEqual({ cost: 56, calls: 28 });
    small[0]!.release();
    small[0]!.release(); // twice changes nothing
    expect(a.inFlight('aggregate')).toEqual({ cost: 54, calls: 27 });
    t++;
  });

  it('refuses a heavy client past its fair share at the limit, and admits a light one within it', () => {
    let t = 0;
    const a = admissionOn({ now: () => t }, { ms: 0 });
    a.admit('aggregate', 'light', undefined); // the light client is active (one call in flight)
    const heavy: (Ticket | Refusal)[] = [];
    for (let i = 0; i < 12; i++) heavy.push(a.admit('aggregate', 'heavy', undefined));
    const refusedHeavy = heavy.filter(isRefusal);
    // Work-conserving: no room is held back for the light client — the heavy one gets the rest of the
    // limit, 9 calls (54 pods) of the 60.
    expect(heavy.length - refusedHeavy.length).toBe(9);
    expect(refusedHeavy[0]!.reason).toBe('fair-share');
    // The heavy client filled the broker to its limit; the light client, within its share, still gets in
    // up to its share (30 pods of 60), then it too is past its share.
    for (let i = 0; i < 4; i++) expect(isRefusal(a.admit('aggregate', 'light', undefined))).toBe(false);
    expect((a.admit('aggregate', 'light', undefined) as Refusal).reason).toBe('fair-share');
    t++;
  });

  it("admits a light client within its share even when a cut left the heavy one's work above the limit", () => {
    let t = 0;
    const delay = { ms: 0 };
    const a = admissionOn({ now: () => t }, delay);
    const held = Array.from({ length: 10 }, () => a.admit('aggregate', 'heavy', undefined) as Ticket);
    expect(a.inFlight('aggregate').cost).toBe(60);
    // Queueing delay four times its target for two intervals: the limit is cut under the heavy client's work.
    delay.ms = 20;
    t += LIMIT_INTERVAL_MS;
    a.limit('aggregate');
    t += LIMIT_INTERVAL_MS;
    expect(a.limit('aggregate')).toBeLessThanOrEqual(30);
    // 60 pods in flight, twice the limit: the light client's call is within its share (half the limit).
    expect(isRefusal(a.admit('aggregate', 'light', undefined))).toBe(false);
    expect((a.admit('aggregate', 'heavy', undefined) as Refusal).reason).toBe('fair-share');
    held.forEach((h) => h.release());
  });

  it('gives a weighted client its larger share, and holds a client to its in-flight quota', () => {
    const t = 0;
    const a = admissionOn({ now: () => t }, { ms: 0 });
    a.admit('aggregate', 'plain', undefined);
    let vip = 1;
    a.admit('aggregate', 'vip', undefined);
    while (!isRefusal(a.admit('aggregate', 'vip', undefined))) vip++;
    expect(vip).toBeGreaterThanOrEqual(7); // 3 of 4 weights of 60 pods: 45 pods, 7 calls of 6
    expect(isRefusal(a.admit('aggregate', 'capped', undefined))).toBe(false);
    const b = admissionOn({ now: () => t }, { ms: 0 });
    b.admit('aggregate', 'capped', undefined);
    b.admit('aggregate', 'capped', undefined);
    expect((b.admit('aggregate', 'capped', undefined) as Refusal).reason).toBe('quota');
  });

  it('refuses a call whose deadline is shorter than admitted work takes now', () => {
    let t = 0;
    const a = admissionOn({ now: () => t }, { ms: 0 });
    const tickets = Array.from({ length: 5 }, () => a.admit('aggregate', 'c', undefined) as Ticket);
    t += 80;
    for (const tk of tickets) tk.release();
    t += LIMIT_INTERVAL_MS;
    a.limit('aggregate'); // the interval closes: 80 ms is what an Aggregate takes
    const d = a.admit('aggregate', 'c', Date.now() + 30) as Refusal;
    expect(d.reason).toBe('deadline');
    expect(d.message).toMatch(/answers in about 80 ms/);
    expect(isRefusal(a.admit('aggregate', 'c', Date.now() + 500))).toBe(false);
  });

  it('does not lock itself out: once every call was refused for its deadline, the next interval admits', () => {
    let t = 0;
    const a = admissionOn({ now: () => t }, { ms: 0 });
    // A cold first interval under load: 308 ms is what an Aggregate took.
    const cold = Array.from({ length: 6 }, () => a.admit('aggregate', 'c', undefined) as Ticket);
    t += 308;
    for (const tk of cold) tk.release(); // the first closes the admitting interval; five make the next
    t += LIMIT_INTERVAL_MS;
    a.limit('aggregate');
    expect((a.admit('aggregate', 'c', Date.now() + 300) as Refusal).reason).toBe('deadline');
    t += LIMIT_INTERVAL_MS; // an interval in which everything was refused measures nothing
    const probe = a.admit('aggregate', 'c', Date.now() + 300);
    expect(isRefusal(probe)).toBe(false);
    (probe as Ticket).release();
  });

  it('gives federation requests priority: a queueing delay that stops new Aggregates leaves them admitted', () => {
    let t = 0;
    const delay = { ms: 12 }; // above the 5 ms target, below 4 × 5 ms
    const a = admissionOn({ now: () => t }, delay);
    const fed: Ticket[] = [];
    for (let i = 0; i < 200; i++) fed.push(a.admit('federation', 'peer', undefined) as Ticket);
    const agg: Ticket[] = [];
    for (let i = 0; i < 10; i++) agg.push(a.admit('aggregate', 'c', undefined) as Ticket);
    for (let i = 0; i < 20; i++) {
      t += LIMIT_INTERVAL_MS;
      a.limit('aggregate');
      a.limit('federation');
    }
    expect(a.limit('aggregate')).toBe(6);
    expect(a.limit('federation')).toBe(2048);
    expect(isRefusal(a.admit('federation', 'peer', undefined))).toBe(false);
    expect((a.admit('aggregate', 'c', undefined) as Refusal).reason).toBe('limit');
  });

  it('follows a reloaded topology: a lower targetDelayMs applies at the next interval', () => {
    let t = 0;
    const settings = { ...SETTINGS, targetDelayMs: 20 };
    const a = admissionOn({ now: () => t }, { ms: 12 }, settings);
    const held = Array.from({ length: 10 }, () => a.admit('aggregate', 'c', undefined) as Ticket);
    t += LIMIT_INTERVAL_MS;
    expect(a.limit('aggregate')).toBeGreaterThanOrEqual(60); // 12 ms is within a 20 ms target
    settings.targetDelayMs = 5; // the reload
    t += LIMIT_INTERVAL_MS;
    expect(a.limit('aggregate')).toBeLessThan(60);
    held.forEach((h) => h.release());
  });

  it('with adaptive admission off, refuses only at the fixed caps', () => {
    let t = 0;
    const a = admissionOn({ now: () => t }, { ms: 100 }, { ...SETTINGS, adaptive: false });
    for (let i = 0; i < 512; i++) expect(isRefusal(a.admit('aggregate', 'c', Date.now() + 1))).toBe(false);
    expect((a.admit('aggregate', 'c', undefined) as Refusal).reason).toBe('hard-cap');
    t++;
  });
});
