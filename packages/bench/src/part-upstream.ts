/**
 * The `upstream` part (issue 24): what federating a configured gRPC backend costs beside a built-in
 * operation of the same shape. One federation runs both `echo` and `inventory.count` (a configured
 * operation calling a grpc-js backend in every pod); rounds alternate between the two on the same brokers.
 * Targets: broker CPU per aggregate of the upstream operation ≤ 1.2 × (echo's + the bare client cost of
 * its backend calls, measured in the same run), and p50 ≤ 1.05 × echo's.
 */
import { DevFederation, stopProcess } from '@wanas/devfed';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { processCpuMs } from './part-cpu';
import { shape, timed, untilAllAnswer, type BenchCounts, type Progress } from './parts';
import { median, summarize } from './stats';
import { COUNT_METHOD, type BareCallResult } from './upstream-backend';

const ENTRY = 's1-p1-a';
const DESCRIPTOR_SET = path.resolve(__dirname, '../../../examples/inventory/inventory.binpb');
const BACKEND = path.join(__dirname, 'upstream-backend.js');
const ECHO = { operation: 'echo', params: { sku: 'widget' } };
const UPSTREAM = { operation: 'inventory.count', params: { sku: 'widget' } };
/** One-way WAN delay, ms: `wanas up`'s default, the latency part's (what a p50 across sites is made of). */
const WAN_LATENCY_MS = 25;

/** One operation's figures in one round. */
interface Side {
  cpuMsPerAggregate: number;
  p50Ms: number;
}

/** What the part reports. */
export interface UpstreamResult {
  part: 'upstream';
  shape: string;
  pods: number;
  aggregates: number;
  rounds: number;
  echo: Side;
  upstream: Side;
  /** Client CPU of one bare grpc-js call to the backend, ms (a separate process, same run). */
  bareCallMs: number;
  /** Median over rounds of upstream CPU ÷ (echo CPU + pods × bare call). Target ≤ 1.2. */
  cpuRatio: number;
  /** Median over rounds of upstream p50 ÷ echo p50. Target ≤ 1.05. */
  p50Ratio: number;
  /** One-way WAN delay of the run, ms. */
  wanLatencyMs: number;
}

/** Every broker's CPU so far, ms, summed. */
function brokersCpuMs(f: DevFederation): number {
  return f.brokers.reduce((n, b) => n + processCpuMs(b.proc?.pid), 0);
}

/** The brokers' CPU over `seconds` of doing nothing (keepalives, timers), ms per second, summed. */
async function idleRate(f: DevFederation, seconds: number): Promise<number> {
  const before = brokersCpuMs(f);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  return (brokersCpuMs(f) - before) / ((performance.now() - t0) / 1000);
}

/**
 * One operation's CPU per aggregate and latencies over `n` sequential aggregates. The brokers' idle CPU
 * over the run's time is taken off: a slower operation would otherwise be charged for the keepalives
 * that run meanwhile.
 */
async function measure(
  f: DevFederation,
  req: object,
  n: number,
  idleMsPerS: number,
  label: string,
  progress: Progress,
): Promise<Side> {
  const ask = f.aggregator(ENTRY);
  const before = brokersCpuMs(f);
  const t0 = performance.now();
  const series = await timed(n, progress, label, async () => {
    const r = await ask(req);
    if (r.summary?.podsFailed) throw new Error(`${label}: ${r.summary.podsFailed} pods failed`);
  });
  const idleMs = idleMsPerS * ((performance.now() - t0) / 1000);
  return {
    cpuMsPerAggregate: Math.max(0, brokersCpuMs(f) - before - idleMs) / n,
    p50Ms: summarize(series).p50Ms,
  };
}

/** The bare client's CPU per call to one pod's backend (its own process). */
async function bareCall(address: string, calls: number): Promise<BareCallResult> {
  const p = spawn(process.execPath, [BACKEND, 'client', address, String(calls)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      readline.createInterface({ input: p.stdout! }).once('line', resolve);
      p.once('exit', (code) => reject(new Error(`upstream-backend client exited (${code})`)));
    });
    return JSON.parse(line) as BareCallResult;
  } finally {
    await stopProcess(p);
  }
}

/** Runs the upstream part. */
export async function upstreamPart(counts: BenchCounts, progress: Progress): Promise<UpstreamResult> {
  const s = shape(counts, 2, 2, 1);
  const f = await DevFederation.start({
    ...s,
    wanLatencyMs: WAN_LATENCY_MS,
    services: {
      inventory: {
        grpc: { descriptorSet: DESCRIPTOR_SET },
        maxInFlight: 1000,
        dev: `${process.execPath} ${BACKEND} server --port {port}`,
      },
    },
    operations: [
      { name: 'inventory.count', service: 'inventory', method: COUNT_METHOD, reduce: { sum: 'total' } },
    ],
  });
  const pods = s.sites * s.podsPerSite;
  const n = counts.smoke ? 20 : Math.max(300, Math.round(counts.requests / 2));
  const rounds = counts.smoke ? 1 : 3;
  try {
    const ask = f.aggregator(ENTRY);
    await untilAllAnswer(ask, pods);
    await timed(counts.smoke ? 5 : 200, progress, 'upstream: warm-up', async () => {
      await ask(ECHO);
      await ask(UPSTREAM);
    });
    const backend = f.backends.backends[0]!;
    const idleMsPerS = await idleRate(f, counts.smoke ? 1 : 3);
    const rows: { echo: Side; upstream: Side; bare: BareCallResult }[] = [];
    for (let i = 0; i < rounds; i++) {
      const echo = await measure(f, ECHO, n, idleMsPerS, `upstream: echo (round ${i + 1})`, progress);
      const upstream = await measure(
        f,
        UPSTREAM,
        n,
        idleMsPerS,
        `upstream: inventory.count (${i + 1})`,
        progress,
      );
      const bare = await bareCall(`${backend.host}:${backend.port}`, n * pods);
      rows.push({ echo, upstream, bare });
    }
    const cpuRatios = rows.map(
      (r) => r.upstream.cpuMsPerAggregate / (r.echo.cpuMsPerAggregate + pods * r.bare.clientMsPerCall),
    );
    const p50Ratios = rows.map((r) => r.upstream.p50Ms / r.echo.p50Ms);
    const mid = rows[cpuRatios.indexOf(median(cpuRatios))] ?? rows[0]!;
    return {
      part: 'upstream',
      shape: `${s.sites} sites × ${s.podsPerSite} pods × ${s.brokersPerPod} broker`,
      pods,
      aggregates: n,
      rounds,
      echo: mid.echo,
      upstream: mid.upstream,
      bareCallMs: mid.bare.clientMsPerCall,
      cpuRatio: median(cpuRatios),
      p50Ratio: median(p50Ratios),
      wanLatencyMs: WAN_LATENCY_MS,
    };
  } finally {
    await f.stop();
  }
}

/** Human lines for the upstream part's result. */
export function describeUpstream(r: UpstreamResult): string {
  return [
    `  ${r.shape}, WAN ${r.wanLatencyMs} ms one way, ${r.rounds} rounds of ${r.aggregates} sequential aggregates each, echo and inventory.count alternating (a configured gRPC operation; a grpc-js backend in every pod):`,
    `  broker CPU per aggregate: echo ${r.echo.cpuMsPerAggregate.toFixed(2)} ms, inventory.count ${r.upstream.cpuMsPerAggregate.toFixed(2)} ms; a bare client call to the backend ${r.bareCallMs.toFixed(3)} ms × ${r.pods} pods`,
    `  CPU ratio ${r.cpuRatio.toFixed(2)}× (upstream ÷ (echo + bare backend calls); target ≤ 1.2×); p50 ${r.upstream.p50Ms.toFixed(1)} ms vs echo ${r.echo.p50Ms.toFixed(1)} ms = ${r.p50Ratio.toFixed(2)}× (target ≤ 1.05×; +${(r.upstream.p50Ms - r.echo.p50Ms).toFixed(1)} ms: the backend call on the critical path); medians over rounds`,
  ].join('\n');
}
