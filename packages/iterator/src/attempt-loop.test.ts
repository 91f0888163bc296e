/**
 * The attempt loop as a state machine on a virtual clock (Jest's fake timers drive both `setTimeout` and
 * `Date.now`): scripted peers, no sockets, so every decision — when a hedge starts, which endpoint is next,
 * what is recorded with which latency — is checked to the millisecond. The same loop over real grpc-js
 * channels and servers is tested in connection-iterator.test.ts.
 */
import { status } from '@grpc/grpc-js';
import type { Endpoint, TargetList } from '@wanas/proto';
import { AttemptLoop } from './attempt-loop';
import type { CancellableCall } from './calls';
import { HedgeBudget } from './hedge-budget';
import {
  DEADLINE_REACHED,
  RECONNECT_WAIT_MS,
  SILENT_SLACK_MS,
  type AttemptMode,
  type ConnectionIteratorOptions,
  type EndpointSource,
  type IteratorOutcome,
} from './options';

/** What a scripted peer does with an attempt: answer or fail after `afterMs`, or never (silent). */
type Script =
  | { answer: string; afterMs: number; ackAfterMs?: number }
  | { fail: number; details?: string; afterMs: number; ackAfterMs?: number }
  | { silent: true; ackAfterMs?: number };

/** One attempt as the scripted peer saw it. */
interface Seen {
  brokerId: string;
  at: number;
  deadlineInMs: number;
  mode: AttemptMode;
  cancelledAt?: number;
}

const target: TargetList = {
  site: 's1',
  pod: 'p1',
  endpoints: ['a', 'b', 'c'].map((id) => ({ brokerId: id, address: `10.0.0.${id.charCodeAt(0)}:7000` })),
};

/** A source in the target list's order, with fixed latency figures per endpoint. */
function source(figures: { p95?: number; floor?: number; down?: boolean } = {}): EndpointSource<string> {
  return {
    order: (t) => t.endpoints,
    client: (ep) => ep.brokerId,
    track: (_ep, run) => run(),
    latencyP95Ms: () => figures.p95,
    latencyFloorMs: () => figures.floor,
    targetDown: () => (figures.down ? { since: Date.now() - 250, reason: 'probe failed' } : undefined),
  };
}

/** Scripts per broker id, in attempt order (the last one repeats); records every attempt seen. */
function peers(scripts: Record<string, Script[]>) {
  const seen: Seen[] = [];
  const attempt = (
    brokerId: string,
    _ep: Endpoint,
    deadline: Date,
    mode: AttemptMode,
  ): CancellableCall<string> => {
    const list = scripts[brokerId] ?? [{ silent: true }];
    const script = list[Math.min(seen.filter((s) => s.brokerId === brokerId).length, list.length - 1)]!;
    const record: Seen = { brokerId, at: Date.now(), deadlineInMs: deadline.getTime() - Date.now(), mode };
    seen.push(record);
    let acked = false;
    if (script.ackAfterMs !== undefined) setTimeout(() => (acked = true), script.ackAfterMs);
    let reject!: (e: unknown) => void;
    const promise = new Promise<string>((resolve, rej) => {
      reject = rej;
      if ('answer' in script) setTimeout(() => resolve(script.answer), script.afterMs);
      if ('fail' in script)
        setTimeout(
          () => rej(Object.assign(new Error('x'), { code: script.fail, details: script.details ?? '' })),
          script.afterMs,
        );
    });
    return {
      promise,
      acknowledged: () => acked,
      cancel: () => {
        record.cancelledAt = Date.now();
        reject(Object.assign(new Error('cancelled'), { code: status.CANCELLED, details: 'Cancelled' }));
      },
    };
  };
  return { seen, attempt };
}

/** Runs one loop to its outcome on the virtual clock (at most `budgetMs` of it). */
async function run(
  opts: Partial<ConnectionIteratorOptions<string, string>> &
    Pick<ConnectionIteratorOptions<string, string>, 'attempt'>,
  budgetMs = 10_000,
): Promise<{ outcome: IteratorOutcome<string>; tookMs: number }> {
  const t0 = Date.now();
  let outcome: IteratorOutcome<string> | undefined;
  void new AttemptLoop<string, string>(
    {
      target,
      source: source(),
      deadline: t0 + 5000,
      attemptTimeoutMs: 1000,
      idempotent: true,
      ...opts,
    },
    () => Date.now(),
  )
    .run()
    .then((o) => (outcome = o));
  // Microtasks first (a run can end with no timer), then one virtual millisecond at a time.
  await jest.advanceTimersByTimeAsync(0);
  for (let waited = 0; !outcome && waited < budgetMs; waited += 1) await jest.advanceTimersByTimeAsync(1);
  if (!outcome) throw new Error(`no outcome within ${budgetMs} virtual ms`);
  return { outcome, tookMs: Date.now() - t0 };
}

const codes = (o: IteratorOutcome<string>) => o.attempts.map((a) => `${a.brokerId}:${a.code}`);

beforeEach(() => jest.useFakeTimers({ now: 1_000_000 }));
afterEach(() => jest.useRealTimers());

describe('AttemptLoop on a virtual clock', () => {
  test('fails over on UNAVAILABLE, in order, and records each attempt with its latency', async () => {
    const p = peers({
      a: [{ fail: status.UNAVAILABLE, details: 'overloaded', afterMs: 30 }],
      b: [{ fail: status.RESOURCE_EXHAUSTED, afterMs: 20 }],
      c: [{ answer: 'from c', afterMs: 10 }],
    });
    const { outcome, tookMs } = await run({ attempt: p.attempt });
    expect(outcome).toMatchObject({ ok: true, value: 'from c', endpoint: { brokerId: 'c' } });
    expect(tookMs).toBe(60);
    expect(outcome.attempts.map((a) => [a.brokerId, a.code, a.latencyMs])).toEqual([
      ['a', status.UNAVAILABLE, 30],
      ['b', status.RESOURCE_EXHAUSTED, 20],
      ['c', status.OK, 10],
    ]);
    expect(p.seen.map((s) => s.at - 1_000_000)).toEqual([0, 30, 50]);
  });

  test("tries a busy peer's twin only with a retry token: without one the refusal is the answer", async () => {
    const scripts = {
      a: [{ fail: status.RESOURCE_EXHAUSTED, details: 'broker busy', afterMs: 3 }],
      b: [{ answer: 'from b', afterMs: 10 }],
    };
    const spent = new HedgeBudget(0.1, 10, 0);
    const p = peers(scripts);
    const { outcome } = await run({ attempt: p.attempt, busyRetryBudget: spent });
    expect(outcome).toMatchObject({ ok: false, code: status.RESOURCE_EXHAUSTED, message: 'broker busy' });
    expect(codes(outcome)).toEqual([`a:${status.RESOURCE_EXHAUSTED}`]);
    const withToken = peers(scripts);
    const { outcome: retried } = await run({
      attempt: withToken.attempt,
      busyRetryBudget: new HedgeBudget(0.1, 10, 1),
    });
    expect(codes(retried)).toEqual([`a:${status.RESOURCE_EXHAUSTED}`, 'b:0']);
  });

  test("the caller's own error is the answer: no failover", async () => {
    const p = peers({ a: [{ fail: status.INVALID_ARGUMENT, details: 'params.user: required', afterMs: 5 }] });
    const { outcome } = await run({ attempt: p.attempt });
    expect(outcome).toMatchObject({
      ok: false,
      code: status.INVALID_ARGUMENT,
      message: 'params.user: required',
    });
    expect(p.seen).toHaveLength(1);
  });

  test('a write that may have reached its peer is never sent twice; one refused is sent to the next', async () => {
    const reached = peers({ a: [{ fail: status.UNAVAILABLE, details: 'Connection dropped', afterMs: 5 }] });
    const sent = await run({ attempt: reached.attempt, idempotent: false });
    expect(sent.outcome).toMatchObject({ ok: false, code: status.UNAVAILABLE });
    expect(reached.seen.map((s) => s.brokerId)).toEqual(['a']);

    const refused = peers({
      a: [{ fail: status.UNAVAILABLE, details: 'connect ECONNREFUSED 10.0.0.97:7000', afterMs: 1 }],
      b: [{ answer: 'written once', afterMs: 5 }],
    });
    const moved = await run({ attempt: refused.attempt, idempotent: false });
    expect(moved.outcome).toMatchObject({ ok: true, value: 'written once' });
    expect(refused.seen.map((s) => s.brokerId)).toEqual(['a', 'b']);
  });

  test("each attempt's gRPC deadline is its timeout, capped by the overall deadline", async () => {
    const p = peers({
      a: [{ fail: status.DEADLINE_EXCEEDED, afterMs: 400 }],
      b: [{ fail: status.DEADLINE_EXCEEDED, afterMs: 400 }],
      c: [{ silent: true }],
    });
    const { outcome, tookMs } = await run({
      attempt: p.attempt,
      deadline: Date.now() + 1000,
      attemptTimeoutMs: 400,
    });
    expect(p.seen.map((s) => s.deadlineInMs)).toEqual([400, 400, 200]);
    // The silent last attempt is cut off by the safety net just after the overall deadline.
    expect(outcome).toMatchObject({ ok: false, code: status.DEADLINE_EXCEEDED });
    expect(tookMs).toBeGreaterThanOrEqual(1000);
    expect(tookMs).toBeLessThanOrEqual(1010);
    expect(p.seen[2]!.cancelledAt).toBeDefined();
  });

  test("a read is hedged after its endpoint's p95; the first answer wins and the other is cancelled", async () => {
    const p = peers({ a: [{ answer: 'slow', afterMs: 500 }], b: [{ answer: 'hedge', afterMs: 10 }] });
    const budget = new HedgeBudget();
    const { outcome, tookMs } = await run({
      attempt: p.attempt,
      source: source({ p95: 30 }),
      hedge: { budget },
    });
    expect(outcome).toMatchObject({ ok: true, value: 'hedge', endpoint: { brokerId: 'b' } });
    expect(tookMs).toBe(40);
    expect(p.seen.map((s) => [s.brokerId, s.at - 1_000_000, s.mode.hedged])).toEqual([
      ['a', 0, false],
      ['b', 30, true],
    ]);
    expect(p.seen[0]!.cancelledAt! - 1_000_000).toBe(40);
    expect(outcome.attempts.map((a) => [a.brokerId, a.code, a.latencyMs, a.hedged])).toEqual([
      ['b', status.OK, 10, true],
      ['a', status.CANCELLED, 40, false],
    ]);
    expect(budget.stats().hedges).toBe(1);
  });

  test('the hedge delay is at most half the attempt timeout (an inflated p95 cannot leave a frozen peer unhedged)', async () => {
    const p = peers({ a: [{ silent: true }], b: [{ answer: 'hedge', afterMs: 5 }] });
    await run({
      attempt: p.attempt,
      source: source({ p95: 900 }),
      attemptTimeoutMs: 200,
      hedge: { budget: new HedgeBudget() },
    });
    expect(p.seen[1]!.at - p.seen[0]!.at).toBe(100);
  });

  test('a write is never hedged', async () => {
    const p = peers({ a: [{ answer: 'slow write', afterMs: 300 }] });
    const { outcome } = await run({
      attempt: p.attempt,
      idempotent: false,
      source: source({ p95: 10 }),
      hedge: { budget: new HedgeBudget() },
    });
    expect(outcome).toMatchObject({ ok: true, value: 'slow write' });
    expect(p.seen).toHaveLength(1);
  });

  test('only unacknowledged: an acknowledged attempt is left alone; a silent one is hedged', async () => {
    const acked = peers({ a: [{ answer: 'working', afterMs: 300, ackAfterMs: 5 }] });
    await run({
      attempt: acked.attempt,
      source: source({ p95: 30 }),
      hedge: { budget: new HedgeBudget(), onlyUnacknowledged: true },
    });
    expect(acked.seen).toHaveLength(1);

    const silent = peers({ a: [{ silent: true }], b: [{ answer: 'twin', afterMs: 10 }] });
    const { outcome } = await run({
      attempt: silent.attempt,
      source: source({ p95: 30 }),
      hedge: { budget: new HedgeBudget(), onlyUnacknowledged: true },
    });
    expect(outcome).toMatchObject({ ok: true, value: 'twin' });
    expect(silent.seen[1]!.at - silent.seen[0]!.at).toBe(30);
  });

  test('no token left: a silent peer is switched from (cancelled, not duplicated) after twice its floor plus slack', async () => {
    const p = peers({ a: [{ silent: true }], b: [{ answer: 'twin', afterMs: 10 }] });
    const empty = new HedgeBudget(0.1, 10, 0);
    const { outcome } = await run({
      attempt: p.attempt,
      source: source({ p95: 30, floor: 25 }),
      hedge: { budget: empty, onlyUnacknowledged: true },
    });
    const afterMs = 2 * 25 + SILENT_SLACK_MS;
    expect(outcome).toMatchObject({ ok: true, value: 'twin' });
    expect(p.seen.map((s) => [s.brokerId, s.at - 1_000_000, s.mode.hedged])).toEqual([
      ['a', 0, false],
      ['b', afterMs, false],
    ]);
    expect(p.seen[0]!.cancelledAt! - 1_000_000).toBe(afterMs);
    expect(outcome.attempts[0]).toMatchObject({
      brokerId: 'a',
      code: status.DEADLINE_EXCEEDED,
      message: `not acknowledged within ${afterMs} ms: asked a twin instead`,
      latencyMs: afterMs,
    });
  });

  test('every endpoint refused: one last attempt waits for the best to reconnect, then UNAVAILABLE', async () => {
    const refused = { fail: status.UNAVAILABLE, details: 'No connection established', afterMs: 1 } as const;
    const p = peers({
      a: [
        refused,
        { fail: status.UNAVAILABLE, details: 'No connection established', afterMs: RECONNECT_WAIT_MS },
      ],
      b: [refused],
      c: [refused],
    });
    const { outcome } = await run({ attempt: p.attempt, attemptTimeoutMs: 3000 });
    expect(p.seen.map((s) => [s.brokerId, s.mode.waitForReady])).toEqual([
      ['a', false],
      ['b', false],
      ['c', false],
      ['a', true],
    ]);
    expect(p.seen[3]!.deadlineInMs).toBe(RECONNECT_WAIT_MS);
    expect(outcome).toMatchObject({ ok: false, code: status.UNAVAILABLE });
    expect((outcome as { message: string }).message).toMatch(
      /^all 4 attempts failed for s1\/p1: a: UNAVAILABLE/,
    );
  });

  test('no reconnect wait once any attempt reached a peer: it was up, waiting would not help', async () => {
    const refused = { fail: status.UNAVAILABLE, details: 'No connection established', afterMs: 1 } as const;
    const p = peers({
      a: [refused],
      b: [{ fail: status.UNAVAILABLE, details: 'Connection dropped', afterMs: 1 }],
      c: [refused],
    });
    const { outcome, tookMs } = await run({ attempt: p.attempt });
    expect(p.seen.map((s) => s.mode.waitForReady)).toEqual([false, false, false]);
    expect(outcome).toMatchObject({ ok: false, code: status.UNAVAILABLE });
    expect(tookMs).toBe(3);
  });

  test('a target known down is refused at once, with no attempt and no hedge token earned', async () => {
    const p = peers({});
    const budget = new HedgeBudget(0.5, 10, 0);
    const { outcome, tookMs } = await run({
      attempt: p.attempt,
      source: source({ down: true }),
      hedge: { budget },
    });
    expect(outcome).toMatchObject({ ok: false, code: status.UNAVAILABLE, attempts: [] });
    expect((outcome as { message: string }).message).toMatch(
      /s1\/p1 is down since .* \(250 ms\): probe failed; not tried/,
    );
    expect(tookMs).toBe(0);
    expect(p.seen).toHaveLength(0);
    expect(budget.stats().requests).toBe(0);
  });

  test("the caller's cancel ends the run at once and cancels every attempt in flight", async () => {
    const p = peers({ a: [{ silent: true }], b: [{ silent: true }], c: [{ silent: true }] });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 70);
    const { outcome, tookMs } = await run({
      attempt: p.attempt,
      signal: controller.signal,
      source: source({ p95: 30 }),
      hedge: { budget: new HedgeBudget() },
    });
    expect(outcome).toMatchObject({ ok: false, code: status.CANCELLED, message: 'cancelled by the caller' });
    expect(tookMs).toBe(70);
    // Hedged twice (at 30 and 60 ms, the most a request gets), then cancelled: all three attempts end.
    expect(p.seen.map((s) => [s.brokerId, s.at - 1_000_000, s.cancelledAt! - 1_000_000])).toEqual([
      ['a', 0, 70],
      ['b', 30, 70],
      ['c', 60, 70],
    ]);
    expect(codes(outcome)).toEqual(['a', 'b', 'c'].map((id) => `${id}:${status.CANCELLED}`));
  });

  test('the overall deadline as an abort reason: DEADLINE_EXCEEDED, attempts recorded as cut off', async () => {
    const p = peers({ a: [{ silent: true }] });
    const controller = new AbortController();
    setTimeout(() => controller.abort(DEADLINE_REACHED), 50);
    const { outcome } = await run({ attempt: p.attempt, signal: controller.signal });
    expect(outcome).toMatchObject({ ok: false, code: status.DEADLINE_EXCEEDED });
    expect(outcome.attempts).toEqual([
      expect.objectContaining({ brokerId: 'a', code: status.DEADLINE_EXCEEDED, latencyMs: 50 }),
    ]);
  });
});
