/**
 * The overload part: a 3-site, 6-pod, 12-broker federation under a 25 ms WAN, driven open-loop (arrivals
 * on a clock) by a heavy client through phases of 0.25, 0.5, 1, 2 and 4 × its capacity and back to
 * 0.25×, with a light client (another identity) at 5% of capacity beside it; once with 300 ms deadlines,
 * once with 2 s ones; then the phases up to 1× again with admission off, for the no-regression check.
 */
import type * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import { DevFederation, table } from '@wanas/devfed';
import { pushbackMsOf } from '@wanas/proto';
import { pods, shape, untilAllAnswer, type BenchCounts, type Progress } from './parts';
import { runOpenLoop, type ClientPhaseResult, type LoadPhase, type OpenLoopResult } from './open-loop';
import { quantile } from './stats';

/** The multiples of capacity the heavy client offers, in order (the last is the recovery phase). */
export const OVERLOAD_MULTIPLES = [0.25, 0.5, 1, 2, 4, 0.25];
/** The light client's rate, as a share of capacity. */
const LIGHT_SHARE = 0.05;

/** One phase, summarised. */
export interface OverloadPhase {
  multiple: number;
  offeredPerSecond: number;
  goodputPerSecond: number;
  /** Answered Aggregates (OK) that were partial. */
  partialShare: number;
  refused: number;
  /** Refusals by reason (from their messages). */
  refusedBy: Record<string, number>;
  refusedP50Ms: number | undefined;
  refusalsWithPushback: number;
  internal: number;
  codes: Record<string, number>;
  light: { okShare: number; p99Ms: number | undefined };
  /** From 1 s into the phase: whole answers / sent and their p99 (recovery). */
  late: { okShare: number; p99Ms: number | undefined };
  /** CPU of the entry broker's process and of every broker process, cores (seconds a second). */
  entryCpu: number;
  brokersCpu: number;
  generatorBusy: number;
  entryRssMb: number;
}

/** One run of the phases with one deadline. */
export interface OverloadRun {
  deadlineMs: number;
  admission: boolean;
  phases: OverloadPhase[];
  messages: string[];
}

/** JSON of the overload part. */
export interface OverloadResult {
  part: 'overload';
  capacityPerSecond: number;
  calibratedPerSecond: number;
  runs: OverloadRun[];
  restarted: string[];
  unloadedRssMb: number;
}

const cpuSeconds = (pid: number | undefined): number => {
  if (!pid) return 0;
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const parts = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(parts[11]) + Number(parts[12])) / 100;
  } catch {
    return 0;
  }
};
const rssMb = (pid: number | undefined): number => {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : 0;
  } catch {
    return 0;
  }
};

/** Runs the overload part. */
export async function overloadPart(counts: BenchCounts, progress: Progress): Promise<OverloadResult> {
  // Smoke: short phases, one deadline, no admission-off run (it checks the part runs, not the figures).
  const seconds = counts.smoke ? 1 : 10;
  const on = await DevFederation.start({ ...shape(counts, 3, 2, 2), wanLatencyMs: 25 });
  const runs: OverloadRun[] = [];
  let capacity = 0;
  let calibrated = 0;
  let restarted: string[] = [];
  let unloadedRssMb = 0;
  try {
    const entry = on.broker('s1-p1-a');
    const pidsAtStart = new Map(on.brokers.map((b) => [b.id, b.proc?.pid]));
    // The load generator counts every refusal: it never sends a refused call again.
    const aggregate = on.aggregator(entry.id, { pushbackRetries: 0 });
    await untilAllAnswer(aggregate, pods(on).length);
    unloadedRssMb = rssMb(entry.proc?.pid);
    // Capacity: a closed loop of 16 callers with 2 s deadlines (after a warm-up of as long), then an open loop.
    progress.start('overload: calibrating capacity', 0);
    const closed = (ms: number) => closedLoopWhole(aggregate, 16, ms);
    await closed(Math.max(1000, (seconds * 1000) / 2));
    const closedLoop = await closed(Math.max(1000, (seconds * 1000) / 2));
    // A closed loop stops short of capacity (its callers wait for answers); the goodput of an open loop at
    // three times that, with 300 ms deadlines (admission keeps what it admits whole), finds the rest.
    const probe = await runOpenLoop(
      job(
        on,
        [{ name: 'probe', rate: Math.round(3 * closedLoop), seconds: Math.max(2, seconds / 2) }],
        300,
        0,
      ),
    );
    const probed = probe.phases[0]!.heavy.whole / probe.phases[0]!.seconds;
    calibrated = Math.round(Math.max(closedLoop, probed));
    for (const deadlineMs of counts.smoke ? [300] : [300, 2000]) {
      progress.start(`overload: phases with ${deadlineMs} ms deadlines`, 0);
      runs.push(await phases(on, calibrated, seconds, deadlineMs, true, OVERLOAD_MULTIPLES));
    }
    restarted = on.brokers.filter((b) => b.proc?.pid !== pidsAtStart.get(b.id)).map((b) => b.id);
    // Unloaded: the entry serving a quarter of capacity (after its first phase: warm, JIT-compiled).
    unloadedRssMb = runs[0]!.phases[0]!.entryRssMb || unloadedRssMb;
    capacity = Math.max(calibrated, ...runs.flatMap((r) => r.phases.map((p) => p.goodputPerSecond)));
  } finally {
    await on.stop();
  }
  const result = (): OverloadResult => ({
    part: 'overload',
    capacityPerSecond: capacity,
    calibratedPerSecond: calibrated,
    runs,
    restarted,
    unloadedRssMb,
  });
  if (counts.smoke) return result();
  // No regression at 1× and below: the same phases with admission off, on a federation of its own.
  const off = await DevFederation.start({
    ...shape(counts, 3, 2, 2),
    wanLatencyMs: 25,
    settings: { admission: { adaptive: false } },
  });
  try {
    await untilAllAnswer(off.aggregator('s1-p1-a'), pods(off).length);
    progress.start('overload: admission off, up to 1×', 0);
    runs.push(await phases(off, calibrated, seconds, 300, false, [0.25, 0.5, 1]));
  } finally {
    await off.stop();
  }
  return result();
}

/** Whole answers a second of `callers` calling one after another for `ms`. */
async function closedLoopWhole(
  aggregate: (r: object, deadlineMs?: number) => Promise<{ summary?: { podsFailed: number } }>,
  callers: number,
  ms: number,
): Promise<number> {
  const end = performance.now() + ms;
  let whole = 0;
  let n = 0; // every call distinct: nothing to share
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (performance.now() < end) {
        const r = await aggregate({ operation: 'echo', params: { n: n++ } }, 2000).catch(
          async (e: grpc.ServiceError) => {
            // A well-behaved client waits out a refusal's pushback (a tight retry loop is a retry storm).
            const ms = pushbackMsOf(e) ?? 50;
            await new Promise((res) => setTimeout(res, ms));
            return undefined;
          },
        );
        if (r && !r.summary?.podsFailed) whole++;
      }
    }),
  );
  return (whole * 1000) / ms;
}

function job(f: DevFederation, phases: LoadPhase[], deadlineMs: number, lightRate: number) {
  return {
    address: f.broker('s1-p1-a').address,
    phases,
    deadlineMs,
    lightRate,
    heavyClient: 'heavy',
    lightClient: 'light',
    operation: 'echo',
  };
}

async function phases(
  f: DevFederation,
  capacity: number,
  seconds: number,
  deadlineMs: number,
  admission: boolean,
  multiples: number[],
): Promise<OverloadRun> {
  const entry = f.broker('s1-p1-a');
  const list = multiples.map((m, i) => ({
    name: `${m}x#${i}`,
    rate: Math.max(1, Math.round(m * capacity)),
    seconds,
  }));
  // CPU and RSS are sampled at each phase's boundaries by a timer in this thread, in step with the worker.
  const cpu: { entry: number; all: number; at: number }[] = [];
  const rss: number[] = [];
  const sample = () => {
    cpu.push({
      entry: cpuSeconds(entry.proc?.pid),
      all: f.brokers.reduce((n, b) => n + cpuSeconds(b.proc?.pid), 0),
      at: performance.now(),
    });
    rss.push(rssMb(entry.proc?.pid));
  };
  sample();
  const timers = list.map((_, i) => setTimeout(sample, (i + 1) * seconds * 1000));
  const r: OpenLoopResult = await runOpenLoop(
    job(f, list, deadlineMs, Math.max(1, Math.round(LIGHT_SHARE * capacity))),
  );
  timers.forEach(clearTimeout);
  while (cpu.length < list.length + 1) sample();
  const messages = new Set<string>();
  return {
    deadlineMs,
    admission,
    phases: r.phases.map((p, i) => {
      for (const m of [...p.heavy.messages, ...p.light.messages]) messages.add(m);
      const dt = (cpu[i + 1]!.at - cpu[i]!.at) / 1000 || p.seconds;
      return summarisePhase(multiples[i]!, p.rate, p.seconds, p.heavy, p.light, {
        entryCpu: (cpu[i + 1]!.entry - cpu[i]!.entry) / dt,
        brokersCpu: (cpu[i + 1]!.all - cpu[i]!.all) / dt,
        generatorBusy: r.generatorBusy[i] ?? 0,
        entryRssMb: rss[i + 1] ?? 0,
      });
    }),
    messages: [...messages].slice(0, 10),
  };
}

function summarisePhase(
  multiple: number,
  rate: number,
  seconds: number,
  heavy: ClientPhaseResult,
  light: ClientPhaseResult,
  extra: Pick<OverloadPhase, 'entryCpu' | 'brokersCpu' | 'generatorBusy' | 'entryRssMb'>,
): OverloadPhase {
  const p99 = (xs: number[]) =>
    xs.length
      ? Math.round(
          quantile(
            [...xs].sort((a, b) => a - b),
            0.99,
          ) * 10,
        ) / 10
      : undefined;
  const p50 = (xs: number[]) =>
    xs.length
      ? Math.round(
          quantile(
            [...xs].sort((a, b) => a - b),
            0.5,
          ) * 10,
        ) / 10
      : undefined;
  const answered = heavy.whole + heavy.partial;
  return {
    multiple,
    offeredPerSecond: rate,
    goodputPerSecond: Math.round(heavy.whole / seconds),
    partialShare: answered ? heavy.partial / answered : 0,
    refused: heavy.refusedMs.length,
    refusedBy: heavy.refusedBy,
    refusedP50Ms: p50(heavy.refusedMs),
    refusalsWithPushback: heavy.withPushback,
    internal: (heavy.codes.INTERNAL ?? 0) + (light.codes.INTERNAL ?? 0),
    codes: heavy.codes,
    light: { okShare: light.sent ? light.whole / light.sent : 1, p99Ms: p99(light.wholeMs) },
    late: { okShare: heavy.lateSent ? heavy.lateWhole / heavy.lateSent : 1, p99Ms: p99(heavy.lateWholeMs) },
    ...extra,
  };
}

/** Human lines for the overload part, with the targets. */
export function describeOverload(r: OverloadResult): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const out: string[] = [
    `capacity (best goodput seen): ${r.capacityPerSecond}/s (calibrated ${r.calibratedPerSecond}/s)`,
  ];
  for (const run of r.runs) {
    const rows = run.phases.map((p) => [
      `${p.multiple}×`,
      String(p.offeredPerSecond),
      `${p.goodputPerSecond} (${(p.goodputPerSecond / r.capacityPerSecond).toFixed(2)}×)`,
      pct(p.partialShare),
      String(p.refused),
      p.refusedP50Ms === undefined ? '' : String(p.refusedP50Ms),
      String(p.internal),
      `${pct(p.light.okShare)} / ${p.light.p99Ms ?? ''}`,
      `${pct(p.late.okShare)} / ${p.late.p99Ms ?? ''}`,
      `${p.entryCpu.toFixed(2)} / ${p.brokersCpu.toFixed(2)}`,
      p.generatorBusy.toFixed(2),
      String(p.entryRssMb),
    ]);
    out.push(
      `\n${run.deadlineMs} ms deadlines, admission ${run.admission ? 'on' : 'off'}`,
      table(
        [
          'OFFERED',
          '/s',
          'GOODPUT/s',
          'PARTIAL',
          'REFUSED',
          'REFUSAL P50',
          'INTERNAL',
          'LIGHT OK / P99',
          'AFTER 1 s OK / P99',
          'CPU ENTRY / ALL',
          'GEN BUSY',
          'ENTRY RSS MB',
        ],
        rows,
      ),
    );
    const by = run.phases
      .filter((p) => p.refused)
      .map((p) => `${p.multiple}× ${JSON.stringify(p.refusedBy)}`);
    if (by.length) out.push(`refused by reason: ${by.join('; ')}`);
    if (run.messages.length) out.push(`messages: ${run.messages.join(' | ')}`);
  }
  const main = r.runs[0];
  if (main) {
    const at = (m: number) => main.phases.find((p) => p.multiple === m && p !== main.phases[0]);
    const unloaded = main.phases[0]!;
    const two = at(2);
    const four = at(4);
    const after = main.phases[main.phases.length - 1]!;
    const maxRss = Math.max(...main.phases.map((p) => p.entryRssMb));
    // Capacity within the deadline itself: what the federation answered in 300 ms at best (work that takes
    // longer is not goodput however much of it the machine can do).
    const best = Math.max(...main.phases.map((p) => p.goodputPerSecond));
    const ratio = (p: OverloadPhase | undefined) =>
      p
        ? `${(p.goodputPerSecond / r.capacityPerSecond).toFixed(2)}× (${(p.goodputPerSecond / best).toFixed(2)}× of the best within 300 ms)`
        : '?';
    out.push(
      `targets (300 ms): goodput 2× ${ratio(two)} (≥ 0.9), 4× ${ratio(four)} (≥ 0.8); ` +
        `partial ≤ 1%: ${pct(Math.max(...main.phases.map((p) => p.partialShare)))}; refusal p50 ≤ 5 ms: ${Math.max(...main.phases.map((p) => p.refusedP50Ms ?? 0))} ms; ` +
        `light ≥ 99%: ${pct(Math.min(...main.phases.map((p) => p.light.okShare)))}, p99 ${Math.max(...main.phases.map((p) => p.light.p99Ms ?? 0))} ms vs unloaded ${unloaded.light.p99Ms} ms (≤ 1.5×); ` +
        `INTERNAL: ${r.runs.reduce((n, x) => n + x.phases.reduce((m, p) => m + p.internal, 0), 0)}; ` +
        `after the overload: ${pct(after.late.okShare)} OK, p99 ${after.late.p99Ms} ms vs unloaded ${unloaded.late.p99Ms} ms (≤ 1.2×); ` +
        `restarted: ${r.restarted.length ? r.restarted.join(', ') : 'none'}; entry RSS ${r.unloadedRssMb} → max ${maxRss} MB (≤ 1.5×)`,
    );
  }
  const off = r.runs.find((x) => !x.admission);
  if (main && off) {
    const cmp = off.phases.map((p, i) => {
      const onP = main.phases[i]!;
      return `${p.multiple}×: p99 on/off ${onP.late.p99Ms}/${p.late.p99Ms} ms, entry CPU on/off ${onP.entryCpu.toFixed(3)}/${p.entryCpu.toFixed(3)}`;
    });
    out.push(`admission on vs off at ≤ 1×: ${cmp.join('; ')}`);
  }
  return out.join('\n');
}
