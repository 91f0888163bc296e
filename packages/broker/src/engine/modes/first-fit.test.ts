import { status } from '@grpc/grpc-js';
import type { PodResult } from '@wanas/proto';
import { failed, key, type Leg, type PodRef } from '../model';
import { MAX_LEG_RETRIES, OUTCOME_UNKNOWN, firstFit, podOrder, verdictOf } from './first-fit';

const pods: PodRef[] = [
  { site: 'us', pod: 'p1' },
  { site: 'us', pod: 'p2' },
  { site: 'eu', pod: 'p1' },
  { site: 'eu', pod: 'p2' },
  { site: 'ap', pod: 'p1' },
  { site: 'sa', pod: 'p1' },
];
const ok = (p: PodRef): PodResult => ({ ...failed(p, 0, ''), answeredBy: `${p.site}-${p.pod}-a` });
const attempt = (code: number, message: string) => ({
  brokerId: 'b',
  address: 'a',
  code,
  message,
  latency: undefined,
  hedged: false,
});
const write = { idempotent: false, nextPodOn: [status.RESOURCE_EXHAUSTED, status.NOT_FOUND] };
const read = { idempotent: true };

describe('podOrder', () => {
  const site = [{ pod: 'p1' }, { pod: 'p2' }, { pod: 'p3' }];
  it("starts a read at the asking broker's pod and keeps the topology's order for a write", () => {
    expect(podOrder(site, 'p2', true).map((p) => p.pod)).toEqual(['p2', 'p1', 'p3']);
    expect(podOrder(site, 'p2', false).map((p) => p.pod)).toEqual(['p1', 'p2', 'p3']);
    expect(podOrder(site, 'p9', true).map((p) => p.pod)).toEqual(['p1', 'p2', 'p3']);
  });
});

describe('verdictOf', () => {
  const p = pods[0]!;
  it('moves on after a pod said "not here" or was never reached, retries an unknown outcome, stops otherwise', () => {
    expect(verdictOf(ok(p), write)).toBe('won');
    expect(verdictOf(failed(p, status.RESOURCE_EXHAUSTED, 'full'), write)).toBe('next');
    expect(verdictOf(failed(p, status.UNAVAILABLE, 'us is down since …'), write)).toBe('unreached');
    const refused = [attempt(status.UNAVAILABLE, 'connect ECONNREFUSED 127.0.0.1:1')];
    expect(verdictOf(failed(p, status.UNAVAILABLE, 'all failed', refused), write)).toBe('unreached');
    expect(verdictOf(failed(p, status.UNIMPLEMENTED, 'no such method'), write)).toBe('unreached');
    const reset = [attempt(status.UNAVAILABLE, 'Connection dropped')];
    expect(verdictOf(failed(p, status.UNAVAILABLE, 'all failed', reset), write)).toBe('unknown');
    expect(verdictOf(failed(p, status.DEADLINE_EXCEEDED, 'timed out', reset), write)).toBe('unknown');
    expect(verdictOf(failed(p, status.FAILED_PRECONDITION, 'key reused'), write)).toBe('stop');
  });

  it('moves on after any failure of a read', () => {
    expect(verdictOf(failed(p, status.DEADLINE_EXCEEDED, 'slow', [attempt(4, 'slow')]), read)).toBe('next');
  });
});

describe('firstFit', () => {
  const steps: Leg[] = pods.slice(0, 3).map((p) => ({
    via: 'local',
    site: p.site,
    pods: [p],
    params: {},
    method: 'LocalRequest',
    target: undefined,
    sitePods: [],
    attemptTimeoutMs: 100,
    preferBrokers: [],
  }));
  const run = (answers: Record<string, PodResult[]>) => {
    const asked: string[] = [];
    return {
      asked,
      run: (step: Leg) => {
        const k = key(step.pods[0]!);
        asked.push(k);
        return Promise.resolve([answers[k]!.shift()!]);
      },
    };
  };
  const opts = { deadline: Date.now() + 60_000, signal: new AbortController().signal };

  it('stops at the first pod that answers OK and lists the pods tried in order', async () => {
    const r = run({
      'us/p1': [failed(pods[0]!, status.RESOURCE_EXHAUSTED, 'full')],
      'us/p2': [ok(pods[1]!)],
    });
    const streamed: string[] = [];
    const out = await firstFit(steps, {
      ...opts,
      op: write,
      run: r.run,
      onLegDone: (prs) => streamed.push(...prs.map(key)),
    });
    expect(out.map((x) => [key(x), x.code])).toEqual([
      ['us/p1', status.RESOURCE_EXHAUSTED],
      ['us/p2', 0],
    ]);
    expect(r.asked).toEqual(['us/p1', 'us/p2']);
    expect(streamed).toEqual(['us/p1', 'us/p2']);
  });

  it('asks a pod with an unknown outcome again (same key) and never moves past it', async () => {
    const cut = failed(pods[0]!, status.DEADLINE_EXCEEDED, 'cut off', [attempt(4, 'timed out')]);
    const r = run({ 'us/p1': [cut, { ...cut }, ok(pods[0]!)] });
    const out = await firstFit(steps, { ...opts, op: write, run: r.run });
    expect(r.asked).toEqual(['us/p1', 'us/p1', 'us/p1']);
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ code: 0 });
    expect(out[0]!.attempts).toHaveLength(2); // the attempts of every round, on one line

    const stuck = run({ 'us/p1': Array.from({ length: MAX_LEG_RETRIES + 1 }, () => ({ ...cut })) });
    const gaveUp = await firstFit(steps, { ...opts, op: write, run: stuck.run });
    expect(stuck.asked).toHaveLength(MAX_LEG_RETRIES + 1);
    expect(gaveUp.map((x) => [key(x), x.code])).toEqual([['us/p1', status.DEADLINE_EXCEEDED]]);
  });

  it('keeps doubting a pod whose outcome was unknown even once it is found down, and says why it stopped', async () => {
    const cut = failed(pods[0]!, status.DEADLINE_EXCEEDED, 'cut off', [attempt(4, 'timed out')]);
    const down = failed(pods[0]!, status.UNAVAILABLE, 'us is down since …');
    const r = run({ 'us/p1': [cut, ...Array.from({ length: MAX_LEG_RETRIES }, () => ({ ...down }))] });
    const out = await firstFit(steps, { ...opts, op: write, run: r.run });
    expect(r.asked).toEqual(Array(MAX_LEG_RETRIES + 1).fill('us/p1'));
    expect(out).toHaveLength(1);
    expect(out[0]!.message).toBe(`us is down since …; ${OUTCOME_UNKNOWN}`);
  });

  it('moves on from a pod that was never reached when nothing was sent before', async () => {
    const r = run({ 'us/p1': [failed(pods[0]!, status.UNAVAILABLE, 'down')], 'us/p2': [ok(pods[1]!)] });
    const out = await firstFit(steps, { ...opts, op: write, run: r.run });
    expect(out.map((x) => x.code)).toEqual([status.UNAVAILABLE, 0]);
  });

  it('moves past a slow pod for a read', async () => {
    const slow = failed(pods[0]!, status.DEADLINE_EXCEEDED, 'slow', [attempt(4, 'slow')]);
    const r = run({ 'us/p1': [slow], 'us/p2': [ok(pods[1]!)] });
    const out = await firstFit(steps, { ...opts, op: read, run: r.run });
    expect(out.map((x) => x.code)).toEqual([status.DEADLINE_EXCEEDED, 0]);
  });
});
