/**
 * Every benchmark part runs end to end on tiny topologies (real processes, the WAN emulator) and prints
 * one JSON object per part. Timings are not asserted here: BENCHMARKS.md holds the measurements.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { WANAS_BIN } from './support/federation';

describe('wanas bench --smoke', () => {
  it('runs latency, cpu, tracing, failover, failure, placement, tail, throughput, scale, upstream, store, overload and coalesce and reports each as JSON', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-bench-smoke-'));
    try {
      const r = spawnSync(
        process.execPath,
        [WANAS_BIN, 'bench', '--smoke', '--json', '--no-markdown', '--out', out],
        { encoding: 'utf8', timeout: 420_000 },
      );
      // The progress bar only draws on a terminal; what remains on stderr must not be an error.
      expect(r.stderr).not.toMatch(/error/i);
      expect(r.status).toBe(0);
      const json = r.stdout
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{"part"'))
        .map((l) => JSON.parse(l) as { part: string } & Record<string, unknown>);
      expect(json.map((j) => j.part)).toEqual([
        'latency',
        'cpu',
        'tracing',
        'failover',
        'failure',
        'placement',
        'tail',
        'throughput',
        'scale',
        'upstream',
        'store',
        'overload',
        'coalesce',
      ]);
      const part = (name: string) => json.find((j) => j.part === name)!;
      // 50 identical concurrent reads ran once in each of the 6 pods.
      const coalesce = part('coalesce') as unknown as {
        burst: { runsPerPod: number[] };
        cacheHit: { atEntryP50Ms: number; bareRoundTripMs: number };
      };
      expect(coalesce.burst.runsPerPod).toEqual([1, 1, 1, 1, 1, 1]);
      // The hits' time at the entry was read from its log lines, and the bare floor measured beside it.
      expect(coalesce.cacheHit.atEntryP50Ms).toBeGreaterThan(0);
      expect(coalesce.cacheHit.bareRoundTripMs).toBeGreaterThan(0);
      const latency = part('latency') as unknown as {
        limitMs: number;
        wanas: { p50Ms: number };
        podsAnswered: { wanas: number };
      };
      expect(latency.limitMs).toBeGreaterThan(0);
      expect(latency.wanas.p50Ms).toBeGreaterThan(0);
      expect(latency.podsAnswered.wanas).toBe(1);
      // The cpu part measured brokers and the bare grpc-js echo on each topology.
      const cpu = part('cpu') as unknown as {
        topologies: { wanasMs: number; bareMs: number }[];
        stages: Record<'local' | 'site', { totalMs: number; byStage: Record<string, number> }>;
      };
      expect(cpu.topologies).toHaveLength(2);
      for (const t of cpu.topologies) expect([t.wanasMs > 0, t.bareMs > 0]).toEqual([true, true]);
      // Where a served request's CPU goes: both profiles read, the stages summing to the total.
      for (const s of [cpu.stages.local, cpu.stages.site]) {
        expect(s.totalMs).toBeGreaterThan(0);
        const sum = Object.values(s.byStage).reduce((a, b) => a + b, 0);
        expect(Math.abs(sum - s.totalMs)).toBeLessThan(0.01);
      }
      // The tracing part counted the spans its traced federation exported.
      const tracing = part('tracing') as unknown as { spansPerAggregate: number; onMs: number };
      expect(tracing.spansPerAggregate).toBeGreaterThan(5);
      expect(tracing.onMs).toBeGreaterThan(0);
      expect((part('failover') as unknown as { kill: { podsAnswered: number } }).kill.podsAnswered).toBe(1);
      // The failure part saw the partition and the frozen pod, and healed both.
      const failure = part('failure') as unknown as Record<
        'partition' | 'frozenPod',
        { recoveredMs?: number }
      >;
      expect(failure.partition.recoveredMs).toBeDefined();
      expect(failure.frozenPod.recoveredMs).toBeDefined();
      // Every user of the placement burst got exactly one desktop.
      const placement = part('placement') as unknown as {
        burst: { users: number; usersWithOneDesktop: number };
      };
      expect(placement.burst.usersWithOneDesktop).toBe(placement.burst.users);
      // The upstream part ran both operations on a federation with a backend in every pod.
      const upstream = part('upstream') as unknown as Record<
        'echo' | 'upstream',
        { cpuMsPerAggregate: number }
      >;
      expect([upstream.echo.cpuMsPerAggregate > 0, upstream.upstream.cpuMsPerAggregate > 0]).toEqual([
        true,
        true,
      ]);
      // The store part measured both stores, and the replay answered.
      const store = part('store') as unknown as {
        stores: { store: string; writesPerSecond: number; replayP50Ms: number }[];
      };
      expect(store.stores.map((s) => s.store)).toEqual(['sqlite', 'postgres']);
      for (const s of store.stores) expect([s.writesPerSecond > 0, s.replayP50Ms > 0]).toEqual([true, true]);
      // The overload part drove its six phases and answered the phases below capacity.
      const overload = part('overload') as unknown as {
        runs: { phases: { multiple: number; goodputPerSecond: number; internal: number }[] }[];
      };
      expect(overload.runs[0]!.phases.map((p) => p.multiple)).toEqual([0.25, 0.5, 1, 2, 4, 0.25]);
      expect(overload.runs[0]!.phases[0]!.goodputPerSecond).toBeGreaterThan(0);
      for (const f of ['latency.json', 'latency.svg', 'placement.json', 'tail.svg', 'scale.json', 'cpu.json'])
        expect(fs.existsSync(path.join(out, f))).toBe(true);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, 440_000);
});
