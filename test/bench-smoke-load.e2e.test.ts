/**
 * The bench parts that drive a federation as hard as it goes (cpu, throughput, overload, coalesce's bursts)
 * run end to end on tiny topologies and report as JSON. They load both cores, so this file runs with
 * nothing beside it (jest.suite.config.js); the other parts are in bench-smoke.e2e.
 */
import { benchSmoke } from './support/bench-smoke';

describe('wanas bench --smoke (load)', () => {
  it('runs cpu, throughput, overload and coalesce and reports each as JSON', () => {
    const parts = ['cpu', 'throughput', 'overload', 'coalesce'];
    benchSmoke(parts, (run) => {
      expect(run.parts).toEqual(parts);
      // 50 identical concurrent reads ran once in each of the 6 pods.
      const coalesce = run.part<{
        burst: { runsPerPod: number[] };
        cacheHit: { atEntryP50Ms: number; bareRoundTripMs: number };
      }>('coalesce');
      expect(coalesce.burst.runsPerPod).toEqual([1, 1, 1, 1, 1, 1]);
      // The hits' time at the entry was read from its log lines, and the bare floor measured beside it.
      expect(coalesce.cacheHit.atEntryP50Ms).toBeGreaterThan(0);
      expect(coalesce.cacheHit.bareRoundTripMs).toBeGreaterThan(0);
      // The cpu part measured brokers and the bare grpc-js echo on each topology.
      const cpu = run.part<{
        topologies: { wanasMs: number; bareMs: number }[];
        stages: Record<'local' | 'site', { totalMs: number; byStage: Record<string, number> }>;
      }>('cpu');
      expect(cpu.topologies).toHaveLength(2);
      for (const t of cpu.topologies) expect([t.wanasMs > 0, t.bareMs > 0]).toEqual([true, true]);
      // Where a served request's CPU goes: both profiles read, the stages summing to the total.
      for (const s of [cpu.stages.local, cpu.stages.site]) {
        expect(s.totalMs).toBeGreaterThan(0);
        const sum = Object.values(s.byStage).reduce((a, b) => a + b, 0);
        expect(Math.abs(sum - s.totalMs)).toBeLessThan(0.01);
      }
      // The overload part drove its six phases and answered the phases below capacity.
      const overload = run.part<{
        runs: { phases: { multiple: number; goodputPerSecond: number; internal: number }[] }[];
      }>('overload');
      expect(overload.runs[0]!.phases.map((p) => p.multiple)).toEqual([0.25, 0.5, 1, 2, 4, 0.25]);
      expect(overload.runs[0]!.phases[0]!.goodputPerSecond).toBeGreaterThan(0);
      for (const f of ['cpu.json']) expect(run.saved(f)).toBe(true);
    });
  }, 440_000);
});
