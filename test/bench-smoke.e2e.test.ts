/**
 * The bench parts that time calls through faults (latency, failover, failure, placement, tail) run end to
 * end on tiny topologies and report as JSON. The parts that drive load are in bench-smoke-load.e2e, which
 * runs with nothing beside it (jest.suite.config.js).
 */
import { benchSmoke } from './support/bench-smoke';

describe('wanas bench --smoke (latency and faults)', () => {
  it('runs latency, failover, failure, placement and tail and reports each as JSON', () => {
    const parts = ['latency', 'failover', 'failure', 'placement', 'tail'];
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
      for (const f of ['latency.json', 'latency.svg', 'placement.json', 'tail.svg'])
        expect(run.saved(f)).toBe(true);
    });
  }, 440_000);
});
