/**
 * The `failure` part: what a partition, a frozen pod, a caller's deadline, a cancel and a slow remote pod
 * cost, on one federation of real broker processes behind the WAN emulator (4 sites × 3 pods × 2 brokers,
 * 25 ms one way; clients in site s1, entry broker s1-p1-a). Run it with `npm run bench -- failure`.
 */
import * as grpc from '@grpc/grpc-js';
import type { AggregateResponse } from '@wanas/proto';
import { DevFederation } from '@wanas/devfed';
import { timed, type BenchCounts, type Progress } from './parts';
import { summarize, type LatencySummary } from './stats';

/** JSON of the failure part. */
export interface FailureResult {
  part: 'failure';
  healthy: LatencySummary;
  partition: Outage;
  frozenPod: Outage;
  deadlineOnly: {
    deadlineMs: number;
    ownSiteOk: number;
    remoteOk: number;
    calls: number;
    /** What went wrong in the calls that were not OK (status, or the other pods that failed). */
    failures: string[];
  };
  cancel: { cancelAtMs: number; hops: number; lastHopEndedMs: number; codes: Record<string, number> };
  slowRemotePod: { extraSiteRequestsPerAggregate: number; aggregates: number; p50Ms: number };
}

/** One outage: how long until it was noticed, what queries cost meanwhile and after, how it healed. */
export interface Outage {
  what: string;
  /** From the fault to every broker concerned reporting the target down, ms (undefined: not within 10 s). */
  noticedMs: number | undefined;
  /** Queries after it was noticed. */
  after: LatencySummary;
  /** after.p99 / healthy.p99. */
  p99Ratio: number;
  /** Share of the affected pods' results that were UNAVAILABLE after it was noticed. */
  affectedUnavailable: number;
  /** From the heal to the first query where the affected pods answer, ms. */
  recoveredMs: number | undefined;
  /** Queries during the recovery where a pod failed for another reason than the outage itself. */
  failedByRecovery: number;
  /** What failed in those queries (pod, code, message), the first few. */
  recoveryFailures: string[];
}

const FIND = { operation: 'sessions.find', params: { user: 'alice' } };
const ENTRY = 's1-p1-a';
/** Longest wait for a fault to be noticed or healed before the part gives up on it, ms. */
const WAIT_LIMIT_MS = 10_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 25 ms; ms until it held, or undefined after {@link WAIT_LIMIT_MS}. */
async function until(cond: () => Promise<boolean>): Promise<number | undefined> {
  const t0 = performance.now();
  while (performance.now() - t0 < WAIT_LIMIT_MS) {
    if (await cond()) return performance.now() - t0;
    await sleep(25);
  }
  return undefined;
}

/** What every measurement of the failure part shares: the federation, its entry's client, the series. */
interface FailureRun {
  f: DevFederation;
  ask: ReturnType<DevFederation['aggregator']>;
  /** Calls per series. */
  n: number;
  series: (label: string, count: number, fn: () => Promise<unknown>) => Promise<number[]>;
  smoke: boolean;
}

/** One outage as {@link measureOutage} runs it. */
interface OutagePlan {
  what: string;
  affected: (p: { site: string; pod: string }) => boolean;
  watchers: string[];
  target: { site: string; pod: string };
  fault: () => void;
  heal: () => void;
}

/** Runs the failure part. */
export async function failurePart(counts: BenchCounts, progress: Progress): Promise<FailureResult> {
  // The smoke run: 3 sites × 2 pods still hold every pod the part uses (s1/p2, s2/p2, s3).
  const f = await DevFederation.start({
    sites: counts.smoke ? 3 : 4,
    podsPerSite: counts.smoke ? 2 : 3,
    brokersPerPod: 2,
    wanLatencyMs: 25,
    logLevel: 'info',
    settings: { attemptTimeoutMs: 250 },
  });
  try {
    const run: FailureRun = {
      f,
      ask: f.aggregator(ENTRY),
      n: counts.smoke ? 10 : counts.requests,
      series: (label, count, fn) => timed(count, progress, label, fn),
      smoke: !!counts.smoke,
    };
    await run.series('failure: warm-up', counts.smoke ? 5 : 50, () => run.ask(FIND));
    const healthy = summarize(await run.series('failure: healthy', run.n, () => run.ask(FIND)));
    await sleep(1000); // no traffic before the cut: the partition must be found by keepalive alone
    const partition = await measureOutage(run, healthy.p99Ms, {
      what: 'site s3 partitioned (wan cut)',
      affected: (p) => p.site === 's3',
      watchers: [ENTRY],
      target: { site: 's3', pod: '' },
      fault: () => f.wan.cut('s3'),
      heal: () => f.wan.heal('s3'),
    });
    const frozen = f.brokers.filter((b) => b.site === 's2' && b.pod === 'p2');
    await sleep(1000);
    const frozenPod = await measureOutage(run, healthy.p99Ms, {
      what: 'every broker of pod s2/p2 frozen (SIGSTOP)',
      affected: (p) => p.site === 's2' && p.pod === 'p2',
      watchers: f.brokers.filter((b) => b.site === 's2' && b.pod !== 'p2').map((b) => b.id),
      target: { site: 's2', pod: 'p2' },
      fault: () => frozen.forEach((b) => b.proc!.kill('SIGSTOP')),
      heal: () => frozen.forEach((b) => b.proc!.kill('SIGCONT')),
    });
    const deadlineOnly = await deadlineOnlyCallers(run);
    const cancel = await cancelAcrossHops(f);
    await settle(run);
    const slowRemotePod = await oneSlowRemotePod(run);
    return { part: 'failure', healthy, partition, frozenPod, deadlineOnly, cancel, slowRemotePod };
  } finally {
    await f.stop();
  }
}

/** The health of a target as each watcher broker reports it (undefined: no answer or not listed). */
async function targetState(f: DevFederation, watchers: string[], site: string, pod: string) {
  const all = await Promise.all(watchers.map((id) => f.status(id).catch(() => undefined)));
  return all.map((s) => s?.targets.find((t) => t.site === site && t.pod === pod)?.state);
}

/** One outage: fault, wait until noticed (no traffic), measure, heal, measure the recovery. */
async function measureOutage(run: FailureRun, healthyP99: number, o: OutagePlan): Promise<Outage> {
  o.fault();
  const noticedMs = await until(async () =>
    (await targetState(run.f, o.watchers, o.target.site, o.target.pod)).every((s) => s === 'down'),
  );
  let affected = 0;
  let unavailable = 0;
  const after = await run.series(`failure: ${o.what}`, run.n, async () => {
    const r = await run.ask(FIND);
    for (const p of r.pods.filter(o.affected)) {
      affected++;
      if (p.code === grpc.status.UNAVAILABLE) unavailable++;
    }
  });
  o.heal();
  const recovery = await measureRecovery(run, o.affected);
  const s = summarize(after);
  return {
    what: o.what,
    noticedMs,
    after: s,
    p99Ratio: s.p99Ms / healthyP99,
    affectedUnavailable: affected ? unavailable / affected : 0,
    ...recovery,
  };
}

/** After a heal: until the affected pods answer, and what failed meanwhile (and in 10 queries after). */
async function measureRecovery(
  run: FailureRun,
  affected: (p: { site: string; pod: string }) => boolean,
): Promise<Pick<Outage, 'recoveredMs' | 'failedByRecovery' | 'recoveryFailures'>> {
  let failedByRecovery = 0;
  const recoveryFailures: string[] = [];
  const failures = (r: AggregateResponse, bad: (p: AggregateResponse['pods'][number]) => boolean) => {
    const pods = r.pods.filter(bad);
    if (pods.length === 0) return;
    failedByRecovery++;
    recoveryFailures.push(...pods.map((p) => `${p.site}/${p.pod} ${p.code} ${p.message}`.slice(0, 200)));
  };
  const recoveredMs = await until(async () => {
    const r = await run.ask(FIND);
    // A pod outside the outage failing, or an affected pod failing otherwise than "down, not tried".
    failures(r, (p) => p.code !== 0 && (!affected(p) || p.code !== grpc.status.UNAVAILABLE));
    return r.pods.filter(affected).every((p) => p.code === 0);
  });
  // The recovered federation answers fully again.
  for (let i = 0; i < 10; i++) failures(await run.ask(FIND), (p) => p.code !== 0);
  return { recoveredMs, failedByRecovery, recoveryFailures: recoveryFailures.slice(0, 5) };
}

/**
 * Between series: the slow pod of the last one (demoted, even down for a while: its calls timed out)
 * answers again, so a series measures its own slow pod only.
 */
function settle(run: FailureRun): Promise<number | undefined> {
  return until(async () => (await run.ask(FIND)).summary?.podsFailed === 0);
}

/** A caller that sets only its gRPC deadline, one slow pod (in the entry's site, then in a remote one). */
async function deadlineOnlyCallers(run: FailureRun): Promise<FailureResult['deadlineOnly']> {
  const deadlineMs = 800;
  const calls = run.smoke ? 3 : 10;
  const failures: string[] = [];
  const okCalls = async (slowPod: string) => {
    let ok = 0;
    await run.series(`failure: deadline-only caller, slow ${slowPod}`, calls, async () => {
      const r = await run
        .ask({ operation: 'echo', params: { sleepMs: 5000, sleepPod: slowPod } }, deadlineMs)
        .catch((e: grpc.ServiceError) => `${slowPod}: ${e.code} ${e.details}`);
      if (typeof r === 'string') return void failures.push(r);
      const bad = r.pods.filter((p) => p.code !== 0 && `${p.site}/${p.pod}` !== slowPod);
      if (bad.length === 0) ok++;
      else
        failures.push(
          `${slowPod}: ${bad.map((p) => `${p.site}/${p.pod} ${p.code} ${p.message}`).join('; ')}`,
        );
    });
    return ok;
  };
  await settle(run);
  const ownSiteOk = await okCalls('s1/p2');
  await settle(run);
  const remoteOk = await okCalls('s3/p1');
  await settle(run);
  return { deadlineMs, ownSiteOk, remoteOk, calls, failures };
}

/**
 * One slow remote pod: the entry should not hedge that site's SiteRequest (its representative is alive and
 * waiting on the pod). SiteRequests are the attempts at a broker's WAN address.
 */
async function oneSlowRemotePod(run: FailureRun): Promise<FailureResult['slowRemotePod']> {
  const wanAddresses = new Set(run.f.brokers.map((b) => b.wanAddress));
  let extra = 0;
  const slowN = Math.min(run.n, 200); // each waits ~0.2 s on the slow pod (below the 250 ms attempt timeout: slow, not failing)
  const slow = await run.series('failure: one slow remote pod', slowN, async () => {
    const r = await run.ask({ operation: 'echo', params: { sleepMs: 200, sleepPod: 's2/p2' } });
    const bySite = new Map<string, Set<string>>();
    for (const p of r.pods) {
      for (const a of p.attempts) {
        if (!wanAddresses.has(a.address)) continue;
        if (!bySite.has(p.site)) bySite.set(p.site, new Set());
        bySite.get(p.site)!.add(a.brokerId);
      }
    }
    for (const s of bySite.values()) extra += s.size - 1;
  });
  return { extraSiteRequestsPerAggregate: extra / slowN, aggregates: slowN, p50Ms: summarize(slow).p50Ms };
}

/**
 * A caller cancels at 0.5 s an Aggregate whose every pod sleeps 4 s; every hop's "served" log line (entry,
 * representatives, pod brokers) must show it ended, and when. The brokers must log at `info`.
 */
export async function cancelAcrossHops(f: DevFederation): Promise<FailureResult['cancel']> {
  const cancelAtMs = 500;
  const correlationId = `bench-cancel-${Date.now()}`;
  const t0 = Date.now();
  await f.cancelledAggregate(ENTRY, correlationId, cancelAtMs);
  await sleep(2000);
  let lastHopEndedMs = 0;
  let hops = 0;
  const codes: Record<string, number> = {};
  for (const b of f.brokers) {
    for (const line of f.logs(b.id)) {
      if (line.correlationId !== correlationId || line.message !== 'served') continue;
      const l = line as { timestamp: string; code: string; kind: string };
      hops++;
      codes[`${l.kind} ${l.code}`] = (codes[`${l.kind} ${l.code}`] ?? 0) + 1;
      lastHopEndedMs = Math.max(lastHopEndedMs, Date.parse(l.timestamp) - t0);
    }
  }
  return { cancelAtMs, hops, lastHopEndedMs, codes };
}

/** Human lines for the failure part's result. */
export function describeFailure(r: FailureResult): string {
  const ms = (v: number | undefined) => (v === undefined ? 'not within 10 s' : `${v.toFixed(0)} ms`);
  const outage = (o: Outage) =>
    [
      `  ${o.what}: noticed in ${ms(o.noticedMs)}; then p50 ${o.after.p50Ms.toFixed(1)} ms, p99 ${o.after.p99Ms.toFixed(1)} ms = ${o.p99Ratio.toFixed(2)}× healthy p99 (goal ≤ 1.2×)`,
      `    affected pods UNAVAILABLE ${(o.affectedUnavailable * 100).toFixed(0)}%; healed: answering again in ${ms(o.recoveredMs)}, ${o.failedByRecovery} queries failed by the recovery`,
      ...o.recoveryFailures.slice(0, 2).map((f) => `    failed by the recovery: ${f}`),
    ].join('\n');
  return [
    `  healthy: p50 ${r.healthy.p50Ms.toFixed(1)} ms, p99 ${r.healthy.p99Ms.toFixed(1)} ms`,
    outage(r.partition),
    outage(r.frozenPod),
    `  caller with only a gRPC deadline of ${r.deadlineOnly.deadlineMs} ms, one slow pod: own site ${r.deadlineOnly.ownSiteOk}/${r.deadlineOnly.calls} OK, remote ${r.deadlineOnly.remoteOk}/${r.deadlineOnly.calls} OK (goal: all)`,
    ...r.deadlineOnly.failures.slice(0, 3).map((f) => `    not OK: ${f.slice(0, 300)}`),
    `  cancel at ${r.cancel.cancelAtMs} ms (pods asked to sleep 4 s): ${r.cancel.hops} hops ended, the last ${r.cancel.lastHopEndedMs} ms after the start (goal ≤ 1200); ${Object.entries(
      r.cancel.codes,
    )
      .map(([k, v]) => `${k} ×${v}`)
      .join(', ')}`,
    `  one slow remote pod: ${r.slowRemotePod.extraSiteRequestsPerAggregate.toFixed(2)} extra SiteRequests per aggregate (goal ≤ 0.1), p50 ${r.slowRemotePod.p50Ms.toFixed(0)} ms`,
  ].join('\n');
}
