/**
 * The `cpu` part: CPU (user + system, every broker process, from /proc) per aggregate, with each broker's
 * idle rate subtracted, against the bare grpc-js cost of the same calls (a unary raw-byte echo between two
 * processes, measured in the same run); per role (entry, representatives, pod brokers); and what an idle
 * broker burns per second in a federation of the demo's shape. Run it with `npm run bench -- cpu`.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { DevFederation, stopProcess, type FederationSpec } from '@wanas/devfed';
import type { BareEchoResult } from './bare-echo';
import { shape, timed, untilAllAnswer, type BenchCounts, type Progress } from './parts';
import { summarize } from './stats';

/** CPU per aggregate on one topology. */
export interface CpuTopology {
  name: string;
  pods: number;
  brokers: number;
  aggregates: number;
  /** Calls a broker served per aggregate (the Aggregate and one per other pod) and sent (one per other pod). */
  callsServed: number;
  callsSent: number;
  /** What those calls cost with bare grpc-js, ms of CPU. */
  bareMs: number;
  /** What every broker together spent per aggregate, idle subtracted, ms of CPU. */
  wanasMs: number;
  ratio: number;
  /** ms of CPU per aggregate, by role: the entry, the remote sites' representatives, the other pod brokers. */
  byRole: { entry: number; representatives: number; podBrokers: number };
  /** Mean idle CPU of a broker before the run, % of one core. */
  idlePercentOfCore: number;
  p50Ms: number;
}

/** JSON of the cpu part. */
export interface CpuResult {
  part: 'cpu';
  bare: BareEchoResult;
  topologies: CpuTopology[];
  /** Idle brokers of a federation shaped like examples/demo.yaml, % of one core each. */
  idle: { brokers: number; seconds: number; meanPercentOfCore: number; maxPercentOfCore: number };
}

const ENTRY = 's1-p1-a';
const ECHO = { operation: 'echo', params: { payload: 'x'.repeat(200) } };
/** The demo's shape: 3 sites, 7 pods, 2 brokers each. */
const DEMO_SHAPE: FederationSpec = {
  'us-east': { 'pod-1': 2, 'pod-2': 2, 'pod-3': 2 },
  'eu-west': { 'pod-1': 2, 'pod-2': 2 },
  'ap-south': { 'pod-1': 2, 'pod-2': 2 },
};

/** Kernel clock ticks per second (/proc's unit of CPU time). */
const TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** A process's CPU so far (user + system, every thread), ms; 0 once it is gone. */
export function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after "(comm)": state is field 3, utime 14 and stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

/** Every broker's CPU so far, ms, by id. */
function cpuOf(f: DevFederation): Map<string, number> {
  return new Map(f.brokers.map((b) => [b.id, processCpuMs(b.proc?.pid)]));
}

/** Each broker's CPU over `seconds` of doing nothing, ms per second. */
async function idleRates(f: DevFederation, seconds: number): Promise<Map<string, number>> {
  const before = cpuOf(f);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const elapsed = (performance.now() - t0) / 1000;
  const after = cpuOf(f);
  return new Map([...after].map(([id, ms]) => [id, (ms - before.get(id)!) / elapsed]));
}

/** Runs the cpu part. */
export async function cpuPart(counts: BenchCounts, progress: Progress): Promise<CpuResult> {
  const bare = await bareEcho(counts.smoke ? 500 : 5000, 300);
  const idle = await demoIdle(counts.smoke ? 2 : 10, !!counts.smoke);
  const aggregates = counts.smoke ? 20 : Math.max(400, counts.requests);
  const topologies = [];
  // The latency part's topology, and one with 16 pods in a site (a representative's LAN fan-out).
  for (const [sites, podsPerSite, brokersPerPod] of [
    [4, 3, 2],
    [2, 16, 1],
  ] as const) {
    topologies.push(
      await cpuOnTopology(
        shape(counts, sites, podsPerSite, brokersPerPod),
        aggregates,
        bare,
        counts,
        progress,
      ),
    );
  }
  return { part: 'cpu', bare, topologies, idle };
}

/** Idle brokers in a federation of the demo's shape: CPU per second each. */
async function demoIdle(seconds: number, smoke: boolean): Promise<CpuResult['idle']> {
  const spec: FederationSpec = smoke ? { s1: { p1: 1 }, s2: { p1: 1 } } : DEMO_SHAPE;
  const f = await DevFederation.start({ spec, wanLatencyMs: 25 });
  try {
    const pods = Object.values(spec).reduce((n, sitePods) => n + Object.keys(sitePods).length, 0);
    await untilAllAnswer(f.aggregator(f.brokers[0]!.id), pods);
    await new Promise((r) => setTimeout(r, 2000)); // the start-up's own work done
    const rates = [...(await idleRates(f, seconds)).values()].map((msPerS) => msPerS / 10);
    return {
      brokers: rates.length,
      seconds,
      meanPercentOfCore: rates.reduce((a, b) => a + b, 0) / rates.length,
      maxPercentOfCore: Math.max(...rates),
    };
  } finally {
    await f.stop();
  }
}

/** Sequential echo aggregates from the entry on one topology: CPU per aggregate by role, idle subtracted. */
async function cpuOnTopology(
  shape: { sites: number; podsPerSite: number; brokersPerPod: number },
  aggregates: number,
  bare: BareEchoResult,
  counts: BenchCounts,
  progress: Progress,
): Promise<CpuTopology> {
  const name = `${shape.sites} sites × ${shape.podsPerSite} pods × ${shape.brokersPerPod} brokers`;
  const f = await DevFederation.start({ ...shape, wanLatencyMs: 0 });
  try {
    const pods = shape.sites * shape.podsPerSite;
    const ask = f.aggregator(ENTRY);
    await timed(counts.smoke ? 5 : 200, progress, `cpu: ${name}: warm-up`, () => ask(ECHO));
    await untilAllAnswer(ask, pods);
    const idle = await idleRates(f, counts.smoke ? 1 : 3);
    const wanAddresses = new Set(f.brokers.map((b) => b.wanAddress));
    const representatives = new Set<string>();
    const before = cpuOf(f);
    const t0 = performance.now();
    const series = await timed(aggregates, progress, `cpu: ${name}`, async () => {
      const r = await ask(ECHO);
      for (const p of r.pods)
        for (const a of p.attempts) if (wanAddresses.has(a.address)) representatives.add(a.brokerId);
    });
    const elapsed = (performance.now() - t0) / 1000;
    const after = cpuOf(f);
    const perAggregate = (id: string) =>
      Math.max(0, after.get(id)! - before.get(id)! - idle.get(id)! * elapsed) / aggregates;
    const byRole = { entry: 0, representatives: 0, podBrokers: 0 };
    for (const b of f.brokers) {
      const role = b.id === ENTRY ? 'entry' : representatives.has(b.id) ? 'representatives' : 'podBrokers';
      byRole[role] += perAggregate(b.id);
    }
    const wanasMs = byRole.entry + byRole.representatives + byRole.podBrokers;
    const callsServed = pods;
    const callsSent = pods - 1;
    const bareMs = callsServed * bare.serverMsPerCall + callsSent * bare.clientMsPerCall;
    const idleMean = [...idle.values()].reduce((a, b) => a + b, 0) / idle.size;
    return {
      name,
      pods,
      brokers: f.brokers.length,
      aggregates,
      callsServed,
      callsSent,
      bareMs,
      wanasMs,
      ratio: wanasMs / bareMs,
      byRole,
      idlePercentOfCore: idleMean / 10,
      p50Ms: summarize(series).p50Ms,
    };
  } finally {
    await f.stop();
  }
}

/** The bare grpc-js echo between two processes (server and client, see bare-echo.ts). */
async function bareEcho(calls: number, bytes: number): Promise<BareEchoResult> {
  const script = path.join(__dirname, 'bare-echo.js');
  const server = spawn(process.execPath, [script, 'server'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let client: ChildProcess | undefined;
  try {
    const port = await firstLine(server);
    client = spawn(process.execPath, [script, 'client', `127.0.0.1:${port}`, String(calls), String(bytes)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    return JSON.parse(await firstLine(client)) as BareEchoResult;
  } finally {
    await stopProcess(client);
    await stopProcess(server);
  }
}

/** The first line a child prints on stdout (rejects if it exits first). */
function firstLine(p: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: p.stdout! });
    lines.once('line', (l) => {
      lines.close();
      resolve(l);
    });
    p.once('exit', (code) => reject(new Error(`bare-echo exited (${code}) before answering`)));
  });
}

/** Human lines for the cpu part's result. */
export function describeCpu(r: CpuResult): string {
  const b = r.bare;
  return [
    `  bare grpc-js unary echo (${b.bytes} B, raw bytes, two processes): server ${b.serverMsPerCall.toFixed(3)} ms + client ${b.clientMsPerCall.toFixed(3)} ms of CPU per call (${b.wallMsPerCall.toFixed(3)} ms wall)`,
    ...r.topologies.flatMap((t) => [
      `  ${t.name}: ${t.wanasMs.toFixed(2)} ms of broker CPU per aggregate vs ${t.bareMs.toFixed(2)} ms for its ${t.callsServed} calls served + ${t.callsSent} sent bare = ${t.ratio.toFixed(2)}× (target ≤ 1.3×); p50 ${t.p50Ms.toFixed(1)} ms`,
      `    by role: entry ${t.byRole.entry.toFixed(2)} ms, representatives ${t.byRole.representatives.toFixed(2)} ms, pod brokers ${t.byRole.podBrokers.toFixed(2)} ms; idle ${t.idlePercentOfCore.toFixed(2)}% of a core per broker (${t.brokers} brokers, ${t.aggregates} aggregates)`,
    ]),
    `  idle, demo-shaped federation (${r.idle.brokers} brokers, ${r.idle.seconds} s): mean ${r.idle.meanPercentOfCore.toFixed(2)}%, max ${r.idle.maxPercentOfCore.toFixed(2)}% of a core per broker (target ≤ 0.5%)`,
  ].join('\n');
}
