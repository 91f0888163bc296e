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
import { describeStages, measureStages, type CpuStages } from './cpu-stages';
import { bareCall, bareClients, type BareCall } from './bare-fanout';
import { shape, timed, untilAllAnswer, type BenchCounts, type Progress } from './parts';
import { median, summarize } from './stats';
import type { AggregateResponse } from '@wanas/proto';

/** CPU per aggregate on one topology (medians over interleaved rounds). */
export interface CpuTopology {
  name: string;
  pods: number;
  brokers: number;
  /** Aggregates per round. */
  aggregates: number;
  rounds: number;
  /** Calls a broker served per aggregate (the Aggregate and one per other pod) and sent (one per other pod). */
  callsServed: number;
  callsSent: number;
  /** What those calls cost with bare grpc-js in the same round, ms of CPU (median). */
  bareMs: number;
  /** The bare server's CPU per call in that round, ms (what a LocalRequest served compares with). */
  bareServerMsPerCall: number;
  /** What every broker together spent per aggregate, idle subtracted, ms of CPU (median). */
  wanasMs: number;
  /** wanasMs / bareMs, the median of the rounds' ratios. */
  ratio: number;
  /**
   * The same call graph with bare grpc-js in the same processes' shape (bare-fanout.ts: one process per
   * pod, raw bytes, an entry and one representative per remote site fanning out), ms of CPU per aggregate,
   * in the median round; and wanasMs over it.
   */
  bareFederationMs: number;
  ratioToBareFederation: number;
  /** ms of CPU per aggregate, by role: the entry, the remote sites' representatives, the other pod brokers. */
  byRole: { entry: number; representatives: number; podBrokers: number };
  /**
   * What one request served costs a broker other than the entry, ms of CPU, fitted over every broker
   * (least squares): a SiteRequest (its representative's fan-out included), a LocalRequest.
   */
  perRequest: { siteRequestMs: number; localRequestMs: number };
  /** Mean idle CPU of a broker before the run, % of one core. */
  idlePercentOfCore: number;
  p50Ms: number;
}

/** JSON of the cpu part. */
export interface CpuResult {
  part: 'cpu';
  /** The bare echo of the first round (each round measures its own). */
  bare: BareEchoResult;
  topologies: CpuTopology[];
  /**
   * Idle brokers of a federation shaped like examples/demo.yaml, % of one core each: just after start-up
   * (channels opened by the first answers still up), and settled (the on-demand channels retired after
   * their idle minute, V8's post-start-up GCs done); no settled figure in a smoke run.
   */
  idle: IdleFigures & { settled?: IdleFigures & { afterSeconds: number } };
  /** The brokers' log level (their default: each call served writes its line). */
  logLevel: 'info';
  /** Where a served LocalRequest's and SiteRequest's CPU goes, by stage (profiled; see cpu-stages.ts). */
  stages: CpuStages;
}

/** What the idle brokers of one window spent. */
export interface IdleFigures {
  brokers: number;
  seconds: number;
  meanPercentOfCore: number;
  maxPercentOfCore: number;
}

/** When the settled idle window starts, s after the federation answers: past the idle-retire minute (60 s) and the GCs that follow. */
const SETTLED_AFTER_S = 130;

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
  const bareCalls = counts.smoke ? 500 : 4000;
  const bare = await bareEcho(bareCalls, 300);
  const idle = await demoIdle(counts.smoke ? 2 : 10, !!counts.smoke);
  const aggregates = counts.smoke ? 20 : Math.max(300, Math.round(counts.requests / 2));
  const topologies = [];
  // The latency part's topology, and one with 16 pods in a site (a representative's LAN fan-out).
  for (const [sites, podsPerSite, brokersPerPod] of [
    [4, 3, 2],
    [2, 16, 1],
  ] as const) {
    const shapeOf = shape(counts, sites, podsPerSite, brokersPerPod);
    topologies.push(await cpuOnTopology(shapeOf, aggregates, bareCalls, counts, progress));
  }
  const stages = await measureStages(counts.smoke ? 150 : 600);
  return { part: 'cpu', bare, topologies, idle, logLevel: 'info', stages };
}

/** Idle brokers in a federation of the demo's shape: CPU per second each, just started and settled. */
async function demoIdle(seconds: number, smoke: boolean): Promise<CpuResult['idle']> {
  const spec: FederationSpec = smoke ? { s1: { p1: 1 }, s2: { p1: 1 } } : DEMO_SHAPE;
  const f = await DevFederation.start({ spec, wanLatencyMs: 25 });
  try {
    const pods = Object.values(spec).reduce((n, sitePods) => n + Object.keys(sitePods).length, 0);
    await untilAllAnswer(f.aggregator(f.brokers[0]!.id), pods);
    const answered = performance.now();
    await new Promise((r) => setTimeout(r, 2000)); // the start-up's own work done
    const started = idleFigures(await idleRates(f, seconds), seconds);
    if (smoke) return started;
    await new Promise((r) => setTimeout(r, answered + SETTLED_AFTER_S * 1000 - performance.now()));
    const settled = idleFigures(await idleRates(f, 2 * seconds), 2 * seconds);
    return { ...started, settled: { ...settled, afterSeconds: SETTLED_AFTER_S } };
  } finally {
    await f.stop();
  }
}

/** Mean and max of brokers' idle rates (ms of CPU per s), as % of one core. */
function idleFigures(rates: Map<string, number>, seconds: number): IdleFigures {
  const percent = [...rates.values()].map((msPerS) => msPerS / 10);
  return {
    brokers: percent.length,
    seconds,
    meanPercentOfCore: percent.reduce((a, b) => a + b, 0) / percent.length,
    maxPercentOfCore: Math.max(...percent),
  };
}

/** Requests each broker served in a run, read from the answers' attempts. */
interface Served {
  site: Map<string, number>;
  local: Map<string, number>;
}

/**
 * Counts what each broker served in one answer: a SiteRequest per attempt at a WAN address, a LocalRequest
 * per attempt at a LAN address by another broker than the entry and the pod's representative (whose own
 * pod runs in-process). Hedged and cancelled attempts count: they cost their broker too.
 */
function countServed(r: AggregateResponse, wanAddresses: Set<string>, served: Served): void {
  const inc = (m: Map<string, number>, id: string) => m.set(id, (m.get(id) ?? 0) + 1);
  const sitesSeen = new Set<string>();
  for (const p of r.pods) {
    const reps = new Set(p.attempts.filter((a) => wanAddresses.has(a.address)).map((a) => a.brokerId));
    for (const a of p.attempts) {
      if (wanAddresses.has(a.address)) {
        // One SiteRequest answers for every pod of its site: count it once per site.
        const k = `${p.site} ${a.brokerId} ${a.hedged}`;
        if (!sitesSeen.has(k)) inc(served.site, a.brokerId);
        sitesSeen.add(k);
      } else if (a.brokerId !== ENTRY && !reps.has(a.brokerId)) inc(served.local, a.brokerId);
    }
  }
}

/** Least squares for cpu ≈ x·site + y·local over the brokers (two unknowns, normal equations). */
function fitPerRequest(
  ids: string[],
  cpu: Map<string, number>,
  served: Served,
): { siteRequestMs: number; localRequestMs: number } {
  let ss = 0;
  let sl = 0;
  let ll = 0;
  let sc = 0;
  let lc = 0;
  for (const id of ids) {
    const s = served.site.get(id) ?? 0;
    const l = served.local.get(id) ?? 0;
    const c = cpu.get(id) ?? 0;
    ss += s * s;
    sl += s * l;
    ll += l * l;
    sc += s * c;
    lc += l * c;
  }
  const det = ss * ll - sl * sl;
  if (det === 0) return { siteRequestMs: ss ? sc / ss : 0, localRequestMs: ll ? lc / ll : 0 };
  return { siteRequestMs: (sc * ll - lc * sl) / det, localRequestMs: (lc * ss - sc * sl) / det };
}

/** One round: `aggregates` sequential echo aggregates; every broker's CPU (idle subtracted) and what it served. */
async function measureRound(
  f: DevFederation,
  ask: ReturnType<DevFederation['aggregator']>,
  aggregates: number,
  idle: Map<string, number>,
  label: string,
  progress: Progress,
) {
  const wanAddresses = new Set(f.brokers.map((b) => b.wanAddress));
  const served: Served = { site: new Map(), local: new Map() };
  const before = cpuOf(f);
  const t0 = performance.now();
  const series = await timed(aggregates, progress, label, async () =>
    countServed(await ask(ECHO), wanAddresses, served),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const after = cpuOf(f);
  const cpu = new Map(
    f.brokers.map((b) => [
      b.id,
      Math.max(0, after.get(b.id)! - before.get(b.id)! - idle.get(b.id)! * elapsed),
    ]),
  );
  return { cpu, served, series };
}

/**
 * Sequential echo aggregates from the entry on one topology, in rounds interleaved with the bare echo (the
 * machine is shared: each round's ratio is to its own bare cost); medians over the rounds.
 */
async function cpuOnTopology(
  shapeOf: { sites: number; podsPerSite: number; brokersPerPod: number },
  aggregates: number,
  bareCalls: number,
  counts: BenchCounts,
  progress: Progress,
): Promise<CpuTopology> {
  const name = `${shapeOf.sites} sites × ${shapeOf.podsPerSite} pods × ${shapeOf.brokersPerPod} brokers`;
  const f = await DevFederation.start({ ...shapeOf, wanLatencyMs: 0, logLevel: 'info' });
  try {
    const pods = shapeOf.sites * shapeOf.podsPerSite;
    const ask = f.aggregator(ENTRY);
    await timed(counts.smoke ? 5 : 200, progress, `cpu: ${name}: warm-up`, () => ask(ECHO));
    await untilAllAnswer(ask, pods);
    const idle = await idleRates(f, counts.smoke ? 1 : 3);
    const rounds = counts.smoke ? 1 : 3;
    const [callsServed, callsSent] = [pods, pods - 1];
    const results: (Awaited<ReturnType<typeof measureRound>> & {
      total: number;
      bareMs: number;
      ratio: number;
      bare: BareEchoResult;
      bareFederationMs: number;
    })[] = [];
    for (let i = 0; i < rounds; i++) {
      const bare = await bareEcho(bareCalls, 300);
      const bareFederationMs = await bareFederation(shapeOf, aggregates);
      const round = await measureRound(f, ask, aggregates, idle, `cpu: ${name} (round ${i + 1})`, progress);
      const total = [...round.cpu.values()].reduce((a, b) => a + b, 0) / aggregates;
      const bareMs = callsServed * bare.serverMsPerCall + callsSent * bare.clientMsPerCall;
      results.push({ ...round, total, bareMs, ratio: total / bareMs, bare, bareFederationMs });
    }
    const mid = results.find((r) => r.ratio === median(results.map((x) => x.ratio)))!;
    const others = f.brokers.map((b) => b.id).filter((id) => id !== ENTRY);
    const perRequest = fitPerRequest(others, mid.cpu, mid.served);
    const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    return {
      name,
      pods,
      brokers: f.brokers.length,
      aggregates,
      rounds,
      callsServed,
      callsSent,
      bareMs: mid.bareMs,
      bareServerMsPerCall: mid.bare.serverMsPerCall,
      wanasMs: mid.total,
      ratio: mid.ratio,
      bareFederationMs: mid.bareFederationMs,
      ratioToBareFederation: mid.total / mid.bareFederationMs,
      byRole: {
        entry: mid.cpu.get(ENTRY)! / aggregates,
        representatives: (perRequest.siteRequestMs * sum(mid.served.site)) / aggregates,
        podBrokers: (perRequest.localRequestMs * sum(mid.served.local)) / aggregates,
      },
      perRequest,
      idlePercentOfCore: [...idle.values()].reduce((a, b) => a + b, 0) / idle.size / 10,
      p50Ms: summarize(mid.series).p50Ms,
    };
  } finally {
    await f.stop();
  }
}

/**
 * CPU per aggregate of a bare grpc-js federation of this shape (see bare-fanout.ts): one process per pod,
 * `aggregates` sequential fan-outs from this process to the entry (s1's first pod), each the call graph of a
 * wanas aggregate; ms of CPU of every node per aggregate (their idle is nil: no keepalive, no timers).
 */
async function bareFederation(
  shapeOf: { sites: number; podsPerSite: number },
  aggregates: number,
): Promise<number> {
  const script = path.join(__dirname, 'bare-fanout.js');
  const nodes: ChildProcess[][] = [];
  try {
    const addresses: string[][] = [];
    for (let s = 0; s < shapeOf.sites; s++) {
      nodes.push([]);
      addresses.push([]);
      for (let p = 0; p < shapeOf.podsPerSite; p++) {
        const node = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
        nodes[s]!.push(node);
        addresses[s]!.push(`127.0.0.1:${await firstLine(node)}`);
      }
    }
    const payload = ECHO.params.payload;
    const podsOf = (s: number) => addresses[s]!.slice(1).map((address) => ({ address, payload }));
    const tree: BareCall = {
      address: addresses[0]![0]!,
      calls: [
        ...podsOf(0),
        ...addresses.slice(1).map((site, s) => ({ address: site[0]!, calls: podsOf(s + 1) })),
      ],
    };
    const client = bareClients();
    for (let i = 0; i < 200; i++) await bareCall(client, tree);
    const cpu = () => nodes.flat().reduce((n, node) => n + processCpuMs(node.pid), 0);
    const before = cpu();
    for (let i = 0; i < aggregates; i++) await bareCall(client, tree);
    const perAggregate = (cpu() - before) / aggregates;
    client.close();
    return perAggregate;
  } finally {
    await Promise.all(nodes.flat().map((n) => stopProcess(n)));
  }
}

/** The bare grpc-js echo between two processes (server and client, see bare-echo.ts). */
export async function bareEcho(calls: number, bytes: number): Promise<BareEchoResult> {
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
export function firstLine(p: ChildProcess): Promise<string> {
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
    `  bare grpc-js unary echo (${b.bytes} B, raw bytes, two processes; first round): server ${b.serverMsPerCall.toFixed(3)} ms + client ${b.clientMsPerCall.toFixed(3)} ms of CPU per call (${b.wallMsPerCall.toFixed(3)} ms wall)`,
    ...r.topologies.flatMap((t) => [
      `  ${t.name}: ${t.wanasMs.toFixed(2)} ms of broker CPU per aggregate vs ${t.bareMs.toFixed(2)} ms for its ${t.callsServed} calls served + ${t.callsSent} sent bare = ${t.ratio.toFixed(2)}× (target ≤ 1.0×; median of ${t.rounds} rounds of ${t.aggregates}); p50 ${t.p50Ms.toFixed(1)} ms`,
      `    the same call graph with bare grpc-js in one process per pod: ${t.bareFederationMs.toFixed(2)} ms per aggregate; wanas ${t.ratioToBareFederation.toFixed(2)}× that`,
      `    by role: entry ${t.byRole.entry.toFixed(2)} ms, representatives ${t.byRole.representatives.toFixed(2)} ms, pod brokers ${t.byRole.podBrokers.toFixed(2)} ms; per request served: SiteRequest ${t.perRequest.siteRequestMs.toFixed(2)} ms, LocalRequest ${t.perRequest.localRequestMs.toFixed(2)} ms (a bare server call ${t.bareServerMsPerCall.toFixed(2)} ms); idle ${t.idlePercentOfCore.toFixed(2)}% of a core per broker (${t.brokers} brokers)`,
    ]),
    `  idle, demo-shaped federation (${r.idle.brokers} brokers, ${r.idle.seconds} s just after start-up): mean ${r.idle.meanPercentOfCore.toFixed(2)}%, max ${r.idle.maxPercentOfCore.toFixed(2)}% of a core per broker (target ≤ 0.5%); brokers log at ${r.logLevel} (their default)`,
    ...(r.idle.settled
      ? [
          `  idle, settled (${r.idle.settled.seconds} s from ${r.idle.settled.afterSeconds} s after start-up: on-demand channels retired): mean ${r.idle.settled.meanPercentOfCore.toFixed(2)}%, max ${r.idle.settled.maxPercentOfCore.toFixed(2)}% of a core per broker`,
        ]
      : []),
    ...(r.stages ? [describeStages(r.stages)] : []),
  ].join('\n');
}
