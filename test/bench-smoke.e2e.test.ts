/**
 * The bench parts that time calls one after another, through faults and at scale (latency, tracing,
 * failover, failure, placement, tail, scale, upstream, store) run end to end on tiny topologies and report
 * as JSON. The parts that drive a federation as hard as it goes are in bench-smoke-load.e2e, which runs with
 * nothing beside it (jest.suite.config.js).
 */
import { benchSmoke } from './support/bench-smoke';

describe('wanas bench --smoke (calls, faults, scale)', () => {
  it('runs latency, tracing, failover, failure, placement, tail, scale, upstream and store and reports each as JSON', () => {
    const parts = [
      'latency',
      'tracing',
      'failover',
      'failure',
      'placement',
      'tail',
      'scale',
      'upstream',
      'store',
    ];
    benchSmoke(parts, (run) => {
      expect(run.parts).toEqual(parts);
      const latency = run.part<{
        limitMs: number;
        wanas: { p50Ms: number };
        podsAnswered: { wanas: number };
      }>('latency');
      expect(latency.limitMs).toBeGreaterThan(0);
      expect(latency.wanas.p50Ms).toBeGreaterThan(0);
      expect(latency.podsAnswered.wanas).toBe(1);
      expect(run.part<{ kill: { podsAnswered: number } }>('failover').kill.podsAnswered).toBe(1);
      // The failure part saw the partition and the frozen pod, and healed both.
      const failure = run.part<Record<'partition' | 'frozenPod', { recoveredMs?: number }>>('failure');
      expect(failure.partition.recoveredMs).toBeDefined();
      expect(failure.frozenPod.recoveredMs).toBeDefined();
      // Every user of the placement burst got exactly one desktop.
      const placement = run.part<{ burst: { users: number; usersWithOneDesktop: number } }>('placement');
      expect(placement.burst.usersWithOneDesktop).toBe(placement.burst.users);
      // The tracing part counted the spans its traced federation exported.
      const tracing = run.part<{ spansPerAggregate: number; onMs: number }>('tracing');
      expect(tracing.spansPerAggregate).toBeGreaterThan(5);
      expect(tracing.onMs).toBeGreaterThan(0);
      // The upstream part ran both operations on a federation with a backend in every pod.
      const upstream = run.part<Record<'echo' | 'upstream', { cpuMsPerAggregate: number }>>('upstream');
      expect([upstream.echo.cpuMsPerAggregate > 0, upstream.upstream.cpuMsPerAggregate > 0]).toEqual([
        true,
        true,
      ]);
      // The store part measured both stores, and the replay answered.
      const store = run.part<{ stores: { store: string; writesPerSecond: number; replayP50Ms: number }[] }>(
        'store',
      );
      expect(store.stores.map((s) => s.store)).toEqual(['sqlite', 'postgres']);
      for (const s of store.stores) expect([s.writesPerSecond > 0, s.replayP50Ms > 0]).toEqual([true, true]);
      for (const f of ['latency.json', 'latency.svg', 'placement.json', 'tail.svg', 'scale.json'])
        expect(run.saved(f)).toBe(true);
    });
  }, 440_000);
});
