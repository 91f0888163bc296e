/**
 * The executor without sockets or wall clock: scripted legs on jest's fake timers. Early answers (min_ok,
 * required sites), the closing phase at the deadline, the caller's cancel, first-fit verdicts and the
 * at-most-one-pod rule for writes — each decided at a known fake instant.
 */
import { status } from '@grpc/grpc-js';
import { DeadlineReached } from '@wanas/iterator';
import type { PodResult } from '@wanas/proto';
import type { Operation } from '../operations/types';
import { execute, type RunLeg } from './executor';
import { failed, key, type Leg, type Plan, type PodRef, type Schedule } from './model';
import { completionRule } from './modes/completion';
import { MAX_LEG_RETRIES, OUTCOME_UNKNOWN } from './modes/first-fit';

const T0 = 1_000_000;
const read = { name: 'echo', idempotent: true } as unknown as Operation;
const write = {
  name: 'desktops.provision',
  idempotent: false,
  nextPodOn: [status.RESOURCE_EXHAUSTED],
} as unknown as Operation;

const pod = (name: string): PodRef => ({ site: name.split('/')[0]!, pod: name.split('/')[1]! });
const leg = (...pods: string[]): Leg => ({
  via: pods.length > 1 ? 'site' : 'local',
  site: pod(pods[0]!).site,
  pods: pods.map(pod),
  params: {},
  method: pods.length > 1 ? 'SiteRequest' : 'LocalRequest',
  target: undefined,
  sitePods: [],
  attemptTimeoutMs: 100,
  preferBrokers: [],
});
const planOf = (legs: Leg[], schedule: Schedule, op: Operation = read, deadlineMs = 1000): Plan => ({
  correlationId: 'c',
  op,
  params: {},
  headers: {},
  idempotencyKey: op.idempotent ? '' : 'k',
  client: 'tester',
  page: undefined,
  started: T0,
  deadline: T0 + deadlineMs,
  hops: 1,
  hedge: false,
  attemptTimeoutMs: 100,
  first: schedule.kind === 'first',
  legs,
  schedule,
});
const ok = (p: PodRef): PodResult => ({ ...failed(p, 0, ''), answeredBy: `${p.pod}-a` });

/** How a scripted leg answers: after `ms` of fake time, or at once when aborted (as an iterator does). */
interface Script {
  ms: number;
  answer: (p: PodRef) => PodResult;
  /** Ignore aborts (a leg that cannot report when cut off). */
  deaf?: boolean;
  /** Report these pods early, after `ms / 2`. */
  early?: boolean;
}

/** Legs that follow their scripts (by the leg's first pod), counting every run and abort. */
function scripted(scripts: Record<string, Script | Script[]>) {
  const runs: string[] = [];
  const aborted: string[] = [];
  const runLeg: RunLeg = (l, signal, report) => {
    const name = key(l.pods[0]!);
    const queue = scripts[name]!;
    const s = Array.isArray(queue) ? (queue.length > 1 ? queue.shift()! : queue[0]!) : queue;
    runs.push(name);
    return new Promise((resolve) => {
      if (s.early) setTimeout(() => report(l.pods.map(s.answer)), s.ms / 2);
      const onAbort = () => {
        aborted.push(name);
        if (s.deaf) return;
        clearTimeout(timer);
        const code = signal.reason instanceof DeadlineReached ? status.DEADLINE_EXCEEDED : status.CANCELLED;
        const attempt = {
          brokerId: 'x',
          address: '',
          code,
          message: 'cut off',
          latency: undefined,
          hedged: false,
        };
        resolve(l.pods.map((p) => failed(p, code, 'cut off', [attempt])));
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve(l.pods.map(s.answer));
      }, s.ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  };
  return { runLeg, runs, aborted };
}

/** Runs the plan; `state()` says whether it has answered (and with what) at the current fake time. */
function start(plan: Plan, runLeg: RunLeg, signal = new AbortController().signal) {
  let out: PodResult[] | undefined;
  const streamed: string[] = [];
  void execute(plan, { runLeg, signal, onPod: (p) => streamed.push(`${key(p)}:${p.code}`) }).then(
    (r) => (out = r),
  );
  return { state: () => out, streamed };
}

const summary = (rs: PodResult[] | undefined) => rs?.map((r) => `${key(r)}:${r.code}`);

beforeEach(() => {
  jest.useFakeTimers({ now: T0 });
});
afterEach(() => {
  jest.useRealTimers();
});

describe('the executor, all at once', () => {
  it('answers every pod in plan order once the last leg is in, each stamped with the time since the start', async () => {
    const s = scripted({ 'us/p1': { ms: 30, answer: ok }, 'eu/p1': { ms: 10, answer: ok } });
    const run = start(
      planOf([leg('us/p1'), leg('eu/p1', 'eu/p2')], { kind: 'all', rule: undefined }),
      s.runLeg,
    );
    await jest.advanceTimersByTimeAsync(29);
    expect(run.state()).toBeUndefined();
    expect(run.streamed).toEqual(['eu/p1:0', 'eu/p2:0']);
    await jest.advanceTimersByTimeAsync(1);
    expect(summary(run.state())).toEqual(['us/p1:0', 'eu/p1:0', 'eu/p2:0']);
    expect(run.state()!.map((r) => r.latency?.nanos)).toEqual([30e6, 10e6, 10e6]);
    // The remote site starts first (WAN before LAN before in-process).
    expect(s.runs).toEqual(['eu/p1', 'us/p1']);
  });

  it('answers at min_ok and cancels the legs still running, their pods "not needed"', async () => {
    const s = scripted({
      'a/p1': { ms: 10, answer: ok },
      'b/p1': { ms: 20, answer: ok },
      'c/p1': { ms: 500, answer: ok },
    });
    const plan = planOf([leg('a/p1'), leg('b/p1'), leg('c/p1')], {
      kind: 'all',
      rule: completionRule(2, new Set()),
    });
    const run = start(plan, s.runLeg);
    await jest.advanceTimersByTimeAsync(20);
    expect(summary(run.state())).toEqual(['a/p1:0', 'b/p1:0', `c/p1:${status.CANCELLED}`]);
    expect(run.state()![2]!.message).toBe('not needed: min_ok 2 reached');
    expect(s.aborted).toEqual(['c/p1']);
  });

  it("takes a streamed leg's early pods as final (a site answering pod by pod)", async () => {
    const s = scripted({ 'eu/p1': { ms: 100, answer: ok, early: true } });
    const plan = planOf([leg('eu/p1', 'eu/p2')], { kind: 'all', rule: completionRule(1, new Set()) });
    const run = start(plan, s.runLeg);
    await jest.advanceTimersByTimeAsync(50);
    expect(summary(run.state())).toEqual(['eu/p1:0', 'eu/p2:0']);
  });

  it('fails at once when a pod of a required site fails, the rest not waited for', async () => {
    const s = scripted({
      'a/p1': { ms: 10, answer: (p) => failed(p, status.UNAVAILABLE, 'down') },
      'b/p1': { ms: 500, answer: ok },
    });
    const plan = planOf([leg('a/p1'), leg('b/p1')], { kind: 'all', rule: completionRule(0, new Set(['a'])) });
    const run = start(plan, s.runLeg);
    await jest.advanceTimersByTimeAsync(10);
    expect(summary(run.state())).toEqual([`a/p1:${status.UNAVAILABLE}`, `b/p1:${status.CANCELLED}`]);
    expect(run.state()![1]!.message).toMatch(/^not waited for: a\/p1 of a required site failed/);
  });

  it('stops at the deadline: cut-off legs report their attempts in the closing phase, a deaf one is unanswered', async () => {
    const s = scripted({
      'a/p1': { ms: 10, answer: ok },
      'b/p1': { ms: 5000, answer: ok },
      'c/p1': { ms: 5000, answer: ok, deaf: true },
    });
    const run = start(
      planOf([leg('a/p1'), leg('b/p1'), leg('c/p1')], { kind: 'all', rule: undefined }),
      s.runLeg,
    );
    await jest.advanceTimersByTimeAsync(1000);
    // At the deadline: closing, taking the cut-off legs' reports until the next macrotask.
    expect(run.state()).toBeUndefined();
    expect(s.aborted).toEqual(['b/p1', 'c/p1']);
    await jest.advanceTimersByTimeAsync(1); // (a fake setImmediate runs a fake millisecond later)
    const rs = run.state()!;
    expect(summary(rs)).toEqual([
      'a/p1:0',
      `b/p1:${status.DEADLINE_EXCEEDED}`,
      `c/p1:${status.DEADLINE_EXCEEDED}`,
    ]);
    expect(rs[1]!.attempts).toHaveLength(1); // reported by the leg as it was cut off
    expect(rs[2]!.message).toEqual(
      expect.stringMatching(/^no answer within the overall deadline \(100[01] ms\)$/),
    );
    expect(rs[2]!.attempts).toEqual([]);
  });

  it('stops every leg when the caller cancels; the pods still running are CANCELLED', async () => {
    const s = scripted({ 'a/p1': { ms: 10, answer: ok }, 'b/p1': { ms: 500, answer: ok, deaf: true } });
    const caller = new AbortController();
    const run = start(
      planOf([leg('a/p1'), leg('b/p1')], { kind: 'all', rule: undefined }),
      s.runLeg,
      caller.signal,
    );
    await jest.advanceTimersByTimeAsync(20);
    caller.abort(new Error('gone'));
    await jest.advanceTimersByTimeAsync(0);
    expect(summary(run.state())).toEqual(['a/p1:0', `b/p1:${status.CANCELLED}`]);
    expect(run.state()![1]!.message).toBe('the caller cancelled the request');
    expect(s.aborted).toEqual(['b/p1']); // a/p1 had answered
  });

  it('reports the pods of a leg that broke its promise as INTERNAL, and answers the others', async () => {
    const runLeg: RunLeg = (l) =>
      l.pods[0]!.site === 'a' ? Promise.reject(new Error('bug')) : Promise.resolve(l.pods.map(ok));
    const run = start(planOf([leg('a/p1'), leg('b/p1')], { kind: 'all', rule: undefined }), runLeg);
    await jest.advanceTimersByTimeAsync(0);
    expect(summary(run.state())).toEqual([`a/p1:${status.INTERNAL}`, 'b/p1:0']);
  });
});

describe('the executor, first-fit', () => {
  it('walks the legs until a pod answers OK; a read moves on after any failure; the rest is never asked', async () => {
    const s = scripted({
      'a/p1': { ms: 10, answer: (p) => failed(p, status.DEADLINE_EXCEEDED, 'slow') },
      'a/p2': { ms: 10, answer: ok },
      'b/p1': { ms: 10, answer: ok },
    });
    const run = start(planOf([leg('a/p1'), leg('a/p2'), leg('b/p1')], { kind: 'first' }), s.runLeg);
    await jest.advanceTimersByTimeAsync(20);
    expect(summary(run.state())).toEqual([`a/p1:${status.DEADLINE_EXCEEDED}`, 'a/p2:0']);
    expect(s.runs).toEqual(['a/p1', 'a/p2']);
    expect(run.streamed).toEqual([`a/p1:${status.DEADLINE_EXCEEDED}`, 'a/p2:0']);
  });

  it('moves a write on past a pod that is full, or that the request never reached', async () => {
    const s = scripted({
      'a/p1': { ms: 10, answer: (p) => failed(p, status.RESOURCE_EXHAUSTED, 'full') },
      'a/p2': { ms: 10, answer: (p) => failed(p, status.UNAVAILABLE, 'known down') },
      'b/p1': { ms: 10, answer: ok },
    });
    const run = start(planOf([leg('a/p1'), leg('a/p2'), leg('b/p1')], { kind: 'first' }, write), s.runLeg);
    await jest.advanceTimersByTimeAsync(30);
    expect(summary(run.state())).toEqual([
      `a/p1:${status.RESOURCE_EXHAUSTED}`,
      `a/p2:${status.UNAVAILABLE}`,
      'b/p1:0',
    ]);
  });

  it('acts in at most one pod: a write whose outcome stays unknown is asked again with its key, then the search stops', async () => {
    const s = scripted({
      'a/p1': { ms: 10, answer: (p) => failed(p, status.DEADLINE_EXCEEDED, 'timed out after sending') },
      'a/p2': { ms: 10, answer: ok },
    });
    const run = start(planOf([leg('a/p1'), leg('a/p2')], { kind: 'first' }, write), s.runLeg);
    await jest.advanceTimersByTimeAsync(10 * (MAX_LEG_RETRIES + 1));
    const rs = run.state()!;
    expect(summary(rs)).toEqual([`a/p1:${status.DEADLINE_EXCEEDED}`]);
    expect(rs[0]!.message).toContain(OUTCOME_UNKNOWN);
    expect(s.runs).toEqual(Array(MAX_LEG_RETRIES + 1).fill('a/p1'));
  });

  it('takes the answer a resend learns: unknown, then OK (the pod replays its outcome)', async () => {
    const s = scripted({
      'a/p1': [
        { ms: 10, answer: (p) => failed(p, status.DEADLINE_EXCEEDED, 'timed out after sending') },
        { ms: 10, answer: ok },
      ],
      'a/p2': { ms: 10, answer: ok },
    });
    const run = start(planOf([leg('a/p1'), leg('a/p2')], { kind: 'first' }, write), s.runLeg);
    await jest.advanceTimersByTimeAsync(20);
    expect(summary(run.state())).toEqual(['a/p1:0']);
    expect(s.runs).toEqual(['a/p1', 'a/p1']);
  });

  it('stops at the deadline with the step in flight reported cut off', async () => {
    const s = scripted({ 'a/p1': { ms: 5000, answer: ok }, 'a/p2': { ms: 10, answer: ok } });
    const run = start(planOf([leg('a/p1'), leg('a/p2')], { kind: 'first' }, read, 300), s.runLeg);
    await jest.advanceTimersByTimeAsync(299);
    expect(run.state()).toBeUndefined();
    await jest.advanceTimersByTimeAsync(2); // the deadline, then the closing phase's next macrotask
    expect(summary(run.state())).toEqual([`a/p1:${status.DEADLINE_EXCEEDED}`]);
    expect(s.runs).toEqual(['a/p1']);
  });
});
