/**
 * The `coalesce` part (issue 37): identical reads once, on a 3-site × 2-pod × 1-broker federation with a
 * probe operation (a plug-in module that counts its runs per pod and takes `ms` to answer):
 * - a burst of 50 identical concurrent reads through one entry, and the runs each pod saw (target: 1);
 * - CPU (every process) of that burst against 50 distinct ones (10 at a time): per coalesced caller vs per
 *   full aggregate (target ≤ 0.1×);
 * - a results-cache hit's latency at the entry (`max_staleness`; target p50 ≤ 1 ms);
 * - nothing to share: one read at a time on this federation and on one with `coalesce: false`, p50 and
 *   CPU per aggregate (target within 3%).
 */
import { DevFederation } from '@wanas/devfed';
import { msToDuration } from '@wanas/proto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bareEcho, processCpuMs } from './part-cpu';
import { timed, type BenchCounts, type Progress } from './parts';
import { median, summarize } from './stats';

const ENTRY = 's1-p1-a';
/** Concurrent identical reads in the burst. */
const BURST = 50;

const PROBE = `
const { defineOperation, z } = require('@wanas/operations');
const runs = new Map();
const params = z.strictObject({ tag: z.string(), ms: z.number() });
module.exports = [
  defineOperation({ name: 'probe.read', description: 'counts its runs', idempotent: true, params,
    cache: { maxAge: '1m' },
    execute: async (p) => {
      runs.set(p.tag, (runs.get(p.tag) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, p.ms));
      return { runs: runs.get(p.tag) };
    } }),
  defineOperation({ name: 'probe.runs', description: 'runs so far', idempotent: true,
    params: z.strictObject({ tag: z.string(), at: z.number() }), execute: (p) => ({ runs: runs.get(p.tag) ?? 0 }) }),
];`;

/** What the part reports. */
export interface CoalesceResult {
  part: 'coalesce';
  shape: string;
  burst: {
    /** Bursts of each kind measured (their CPU summed). */
    rounds: number;
    callers: number;
    /** Runs of the operation in each pod for the identical burst (target 1 each). */
    runsPerPod: number[];
    /** CPU of every process, ms, over every round: the identical bursts, and as many distinct reads. */
    identicalCpuMs: number;
    distinctCpuMs: number;
    /** (identical burst CPU ÷ callers) ÷ (distinct burst CPU ÷ callers): per coalesced caller vs full. */
    perCallerVsFull: number;
  };
  /**
   * Results-cache hits, one at a time: the client's round trip (`p50Ms`, `p99Ms`); the time at the entry,
   * from the call's handler to its answer (`atEntryP50Ms`, the entry's `served` log lines); and a bare
   * grpc-js unary round trip between two processes in the same run (`bareRoundTripMs`), the floor of the first.
   */
  cacheHit: { n: number; p50Ms: number; p99Ms: number; atEntryP50Ms: number; bareRoundTripMs: number };
  /** One read at a time (nothing to share), coalescing on vs off. */
  nothingToShare: { n: number; onP50Ms: number; offP50Ms: number; onCpuMs: number; offCpuMs: number };
}

const cpuOf = (f: DevFederation) => f.brokers.reduce((n, b) => n + processCpuMs(b.proc?.pid), 0);

async function federation(dir: string, coalesce: boolean): Promise<DevFederation> {
  return DevFederation.start({
    sites: 3,
    podsPerSite: 2,
    brokersPerPod: 1,
    wanLatencyMs: 10,
    // Admission by a fixed count (as the overload part's comparison runs): the bursts measure sharing,
    // not how an adaptive limit meets 50 calls arriving at once.
    settings: { coalesce, admission: { adaptive: false } },
    // The brokers' default: every call served writes its line (the cache hits' time at the entry is read there).
    logLevel: 'info',
    operations: [{ module: path.join(dir, 'probe.js') }],
  });
}

/** One read at a time, each of its own (nothing to share): latencies and CPU per aggregate. */
async function oneAtATime(f: DevFederation, n: number, progress: Progress, label: string) {
  const ask = f.aggregator(ENTRY);
  let i = 0;
  const read = () => ask({ operation: 'probe.read', params: { tag: `one-${i++}`, ms: 0 } });
  await timed(Math.min(50, n), progress, `${label}: warm-up`, read);
  const cpu0 = cpuOf(f);
  const lat = await timed(n, progress, label, read);
  return { p50Ms: summarize(lat).p50Ms, cpuMs: (cpuOf(f) - cpu0) / n };
}

/**
 * 50 identical concurrent reads against 50 distinct ones, in interleaved rounds (/proc counts CPU in 10 ms
 * ticks per process, too coarse for one burst): CPU of every process, and the runs per pod of the first.
 */
async function bursts(on: DevFederation, counts: BenchCounts, progress: Progress) {
  const ask = on.aggregator(ENTRY);
  /** `BURST` reads, `wave` at a time; CPU of every process meanwhile. */
  const burstOf = async (tag: (i: number) => string, wave: number) => {
    const cpu0 = cpuOf(on);
    for (let w = 0; w < BURST; w += wave)
      await Promise.all(
        Array.from({ length: wave }, (_, i) =>
          ask({ operation: 'probe.read', params: { tag: tag(w + i), ms: 200 } }),
        ),
      );
    return cpuOf(on) - cpu0;
  };
  const rounds = counts.smoke ? 2 : 10;
  progress.start('coalesce: bursts of 50 reads, identical and distinct', 2 * rounds);
  // Warm-up rounds of both, not measured: the entry's JIT compiles the paths for a while (on 2 cores,
  // background compilation after only 300 calls was 0.4 ms of CPU per coalesced caller, traced with
  // --trace-opt), a cost paid once, not per caller.
  for (let r = 0; r < (counts.smoke ? 1 : 4); r++) {
    await burstOf(() => `warm-${r}`, BURST);
    await burstOf((i) => `warm-${r}-${i}`, 10);
  }
  let identicalCpuMs = 0;
  let distinctCpuMs = 0;
  for (let r = 0; r < rounds; r++) {
    identicalCpuMs += await burstOf(() => `burst-${r}`, BURST);
    progress.tick();
    // The same 50 reads distinct, 10 at a time (within the federation's capacity): 50 full aggregates.
    distinctCpuMs += await burstOf((i) => `distinct-${r}-${i}`, 10);
    progress.tick();
  }
  const runs = await ask({ operation: 'probe.runs', params: { tag: 'burst-0', at: 0 } });
  return {
    rounds,
    callers: BURST,
    runsPerPod: runs.pods.map((p) => Number((p.result as { runs: number }).runs)),
    identicalCpuMs: Math.round(identicalCpuMs),
    distinctCpuMs: Math.round(distinctCpuMs),
    perCallerVsFull: Number((identicalCpuMs / distinctCpuMs).toFixed(3)),
  };
}

/**
 * Results-cache hits one at a time: the client's round trip, the time at the entry (its `served` log
 * lines), and a bare grpc-js round trip measured just after.
 */
async function cacheHits(
  on: DevFederation,
  n: number,
  progress: Progress,
): Promise<CoalesceResult['cacheHit']> {
  const ask = on.aggregator(ENTRY);
  const cached = {
    operation: 'probe.read',
    params: { tag: 'cached', ms: 0 },
    maxStaleness: msToDuration(60_000),
  };
  await ask(cached);
  let hit = 0;
  const hits = await timed(n, progress, 'coalesce: cache hits', () =>
    ask({ ...cached, correlationId: `bench-hit-${hit++}` }),
  );
  const h = summarize(hits);
  const atEntry = on
    .logs(ENTRY)
    .filter((l) => l.message === 'served' && String(l.correlationId).startsWith('bench-hit-'))
    .map((l) => Number(l.latencyMs));
  const bare = await bareEcho(n, 300);
  return {
    ...{ n, p50Ms: h.p50Ms, p99Ms: h.p99Ms },
    atEntryP50Ms: atEntry.length ? median(atEntry) : Number.NaN,
    bareRoundTripMs: Number(bare.wallMsPerCall.toFixed(2)),
  };
}

/** The part (see the file's comment). */
export async function coalescePart(counts: BenchCounts, progress: Progress): Promise<CoalesceResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-bench-coalesce-'));
  fs.writeFileSync(path.join(dir, 'probe.js'), PROBE);
  const n = counts.smoke ? 20 : 300;
  try {
    const on = await federation(dir, true);
    let burst: CoalesceResult['burst'];
    let cacheHit: CoalesceResult['cacheHit'];
    let shared: { p50Ms: number; cpuMs: number };
    try {
      // First, while this federation's history is the one "off" will have (started, then these reads):
      // after the bursts its cache holds hundreds of answers more, and its heap costs more to collect.
      shared = await oneAtATime(on, n, progress, 'coalesce: one read at a time, coalescing on');
      burst = await bursts(on, counts, progress);
      cacheHit = await cacheHits(on, n, progress);
    } finally {
      await on.stop();
    }
    const off = await federation(dir, false);
    try {
      const alone = await oneAtATime(off, n, progress, 'coalesce: one read at a time, coalescing off');
      return {
        part: 'coalesce',
        shape: '3 sites × 2 pods × 1 broker, 10 ms WAN one way',
        burst,
        cacheHit,
        nothingToShare: {
          n,
          onP50Ms: shared.p50Ms,
          offP50Ms: alone.p50Ms,
          onCpuMs: Number(shared.cpuMs.toFixed(2)),
          offCpuMs: Number(alone.cpuMs.toFixed(2)),
        },
      };
    } finally {
      await off.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The part's lines for the terminal and BENCHMARKS.md. */
export function describeCoalesce(r: CoalesceResult): string {
  const b = r.burst;
  const s = r.nothingToShare;
  return [
    `  ${r.shape}; probe.read counts its runs per pod`,
    `  ${b.callers} identical concurrent reads through one entry: runs per pod ${b.runsPerPod.join(', ')} (target 1 each)`,
    `  CPU (every process, ${b.rounds} rounds): identical bursts ${b.identicalCpuMs} ms vs as many distinct reads ${b.distinctCpuMs} ms: per coalesced caller ${b.perCallerVsFull}× a full aggregate (target ≤ 0.1×)`,
    `  results-cache hit (max_staleness), ${r.cacheHit.n} one at a time: at the entry p50 ${r.cacheHit.atEntryP50Ms} ms (target ≤ 1 ms); the client's round trip p50 ${r.cacheHit.p50Ms} ms, p99 ${r.cacheHit.p99Ms} ms, against a bare grpc-js unary round trip of ${r.cacheHit.bareRoundTripMs} ms in this run`,
    `  nothing to share (one read at a time, ${s.n}): p50 on ${s.onP50Ms} ms vs off ${s.offP50Ms} ms = ${(s.onP50Ms / s.offP50Ms).toFixed(3)}×; CPU per aggregate on ${s.onCpuMs} ms vs off ${s.offCpuMs} ms = ${(s.onCpuMs / s.offCpuMs).toFixed(3)}× (target within 3%, two federations in one run)`,
  ].join('\n');
}
