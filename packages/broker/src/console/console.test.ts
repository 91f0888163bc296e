import { AggregateRequest, AggregateResponse, codeName, msToDuration } from '@wanas/proto';
import { RequestJournal } from './journal';
import { BUCKETS, BUCKET_MS, HealthWindows } from './windows';

const req = (id: string) =>
  AggregateRequest.fromPartial({ correlationId: id, operation: 'echo', params: { user: 'alice' } });
const res = (failed: number) =>
  AggregateResponse.fromPartial({
    summary: {
      podsAsked: 2,
      podsOk: 2 - failed,
      podsFailed: failed,
      failedByCode: failed ? { UNAVAILABLE: failed } : {},
    },
    pods: [
      {
        site: 's1',
        pod: 'p1',
        code: 0,
        result: { user: 'alice', sessions: ['x'] },
        latency: msToDuration(3),
      },
      {
        site: 's2',
        pod: 'p1',
        code: failed ? 14 : 0,
        message: failed ? 'down' : '',
        attempts: [{ brokerId: 's2a', code: 14, message: 'down', latency: msToDuration(40), hedged: false }],
        latency: msToDuration(41),
      },
    ],
    reduced: { total: 1 },
  });

describe('the console journal', () => {
  it('keeps the last N, newest found by id, failed ones filtered, and the live tail after a position', () => {
    const j = new RequestJournal(() => ({ requests: 3, keepBodies: false }));
    for (let i = 1; i <= 5; i++) j.record(req(`c${i}`), 'ops', i, { res: res(i % 2) });
    j.record(req('c6'), 'ops', 6, { code: 4, message: 'deadline' });
    expect(j.since(0).map((e) => e.correlationId)).toEqual(['c4', 'c5', 'c6']);
    expect(j.since(0, true).map((e) => e.correlationId)).toEqual(['c5', 'c6']);
    expect(j.since(5).map((e) => e.correlationId)).toEqual(['c6']);
    expect(j.find('c6')).toMatchObject({ code: 'DEADLINE_EXCEEDED', message: 'deadline', pods: [] });
    expect(j.find('c1')).toBeUndefined();
    const tree = j.find('c5')!;
    expect(tree.pods[1]).toMatchObject({ site: 's2', code: 'UNAVAILABLE', latencyMs: 41 });
    expect(tree.pods[1]!.attempts[0]).toMatchObject({ brokerId: 's2a', code: 'UNAVAILABLE', latencyMs: 40 });
  });

  it('holds ids and codes only, unless bodies are kept (users and sessions are personal data)', () => {
    const plain = new RequestJournal(() => ({ requests: 10, keepBodies: false }));
    plain.record(req('a'), 'ops', 1, { res: res(0) });
    expect(JSON.stringify(plain.find('a'))).not.toContain('alice');
    const kept = new RequestJournal(() => ({ requests: 10, keepBodies: true }));
    kept.record(req('a'), 'ops', 1, { res: res(0) });
    expect(kept.find('a')).toMatchObject({ params: { user: 'alice' }, reduced: { total: 1 } });
    expect(kept.find('a')!.pods[0]!.result).toEqual({ user: 'alice', sessions: ['x'] });
  });

  it('makes the tree of an answer shared by several callers once, each entry its own', () => {
    const j = new RequestJournal(() => ({ requests: 10, keepBodies: false }));
    const shared = res(1);
    j.record(req('first'), 'ops', 5, { res: shared });
    j.record(req('joiner'), 'ops', 2, { res: { ...shared, correlationId: 'joiner', sharedFrom: 'first' } });
    const [first, joiner] = [j.find('first')!, j.find('joiner')!];
    expect(joiner.pods).toBe(first.pods);
    expect(joiner).toMatchObject({ correlationId: 'joiner', sharedFrom: 'first', latencyMs: 2 });
    expect(first.pods.map((p) => p.code)).toEqual(shared.pods.map((p) => codeName(p.code)));
  });

  it('keeps nothing when the ring is 0', () => {
    const j = new RequestJournal(() => ({ requests: 0, keepBodies: false }));
    j.record(req('a'), 'ops', 1, { res: res(0) });
    expect(j.since(0)).toEqual([]);
  });
});

describe('health windows (virtual clock)', () => {
  it('rates, errors and quantiles per 10-second bucket over 15 minutes, empty buckets as zeros', () => {
    let now = 1_000_000 * BUCKET_MS;
    const w = new HealthWindows(() => now);
    for (let i = 0; i < 100; i++) w.record('s1', i % 10 !== 0, i < 98 ? 10 : 1000);
    now += BUCKET_MS;
    w.record('s1', true, 5);
    now += BUCKET_MS / 2;
    const points = w.snapshot().s1!;
    expect(points).toHaveLength(BUCKETS);
    const full = points[BUCKETS - 2]!;
    expect(full.rps).toBe(10);
    expect(full.errorsPerSec).toBe(1);
    expect(full.p50Ms).toBeGreaterThanOrEqual(10);
    expect(full.p50Ms).toBeLessThan(11.5);
    expect(full.p99Ms).toBeGreaterThanOrEqual(1000);
    expect(full.p99Ms).toBeLessThan(1150);
    // The bucket in progress is divided by the 5 s it has run.
    expect(points[BUCKETS - 1]!.rps).toBeCloseTo(0.2);
    expect(points[0]).toMatchObject({ rps: 0, p50Ms: null });
  });

  it('forgets what is older than 15 minutes', () => {
    let now = 0;
    const w = new HealthWindows(() => now);
    w.record('*', true, 1);
    now += (BUCKETS + 1) * BUCKET_MS;
    w.record('*', true, 1);
    expect(w.snapshot()['*']!.filter((p) => p.rps > 0)).toHaveLength(1);
  });
});
