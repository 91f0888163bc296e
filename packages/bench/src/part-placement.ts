import * as grpc from '@grpc/grpc-js';
import {
  FederationServiceClient,
  LocalRequest,
  Mode,
  msToDuration,
  type AggregateRequest,
} from '@wanas/proto';
import { randomUUID } from 'node:crypto';
import { table } from '@wanas/devfed';
import { DevFederation } from '@wanas/devfed';
import { shape, timed, unary, untilAllAnswer, wanBytes, type BenchCounts, type Progress } from './parts';
import { summarize, type LatencySummary } from './stats';

/** JSON of the placement part. */
export interface PlacementResult {
  part: 'placement';
  /** First-fit with room in the entry's own pod vs MODE_ALL scoped to that pod. */
  ownPod: {
    first: LatencySummary;
    scopedAll: LatencySummary;
    wanBytesPerCall: { first: number; scopedAll: number };
    podsListed: number;
  };
  /** First-fit placed in the preferred remote site vs one warm WAN call. */
  preferredRemote: { first: LatencySummary; limit: LatencySummary; podsListed: number };
  /** min_ok = pods − 1 with one pod 3 s slow vs MODE_ALL with every pod healthy. */
  quorum: {
    minOk: number;
    pods: number;
    slowPod: string;
    quorum: LatencySummary;
    healthyAll: LatencySummary;
    cancelled: number;
  };
  /** Users placed at once with MODE_FIRST against pools that fill up during the run. */
  burst: {
    users: number;
    latency: LatencySummary;
    usersWithOneDesktop: number;
    usersWithOtherCounts: number;
    placedByPod: Record<string, number>;
    inUseRiseByPod: Record<string, number>;
    failedCalls: number;
  };
  series: Record<string, number[]>;
}

const BIG = 5000;
/** GPU desktops per pod: a few per pod, so 50 users fill the entry's site and spill over. */
const GPU_PER_POD = 5;

/**
 * 4 sites × 3 pods × 2 brokers, 25 ms one way. First-fit placement in the entry's own pod and in a
 * preferred remote site against their limits, a quorum answer with one slow pod, and a burst of users
 * placed at once while pools fill up (each must get exactly one desktop).
 */
export async function placementPart(counts: BenchCounts, progress: Progress): Promise<PlacementResult> {
  const topo = shape(counts, 4, 3, 2);
  const f = await DevFederation.start({
    ...topo,
    wanLatencyMs: 25,
    pools: (site, pod) => ({
      standard: pod === 'p1' && (site === 's1' || site === 's2') ? BIG : 12,
      gpu: GPU_PER_POD,
    }),
  });
  try {
    const aggregate = f.aggregator('s1-p1-a');
    await untilAllAnswer(aggregate, topo.sites * topo.podsPerSite);
    await timed(counts.smoke ? 5 : 50, progress, 'placement: warm-up', () =>
      aggregate({ operation: 'echo' }),
    );
    const own = await ownPodSeries(f, aggregate, counts.requests, progress);
    const remote = await preferredRemoteSeries(f, aggregate, counts, progress);
    const quorum = await quorumSeries(aggregate, topo, counts.requests, progress);
    const burst = await burstOfUsers(aggregate, counts.smoke ? 10 : 50, progress);
    return {
      part: 'placement',
      ownPod: own.result,
      preferredRemote: remote.result,
      quorum: quorum.result,
      burst,
      series: { ...own.series, ...remote.series, ...quorum.series },
    };
  } finally {
    await f.stop();
  }
}

type Aggregate = ReturnType<DevFederation['aggregator']>;

/** A placement of a standard desktop with a fresh key (scope or mode in `extra`). */
const place = (aggregate: Aggregate, extra: Partial<AggregateRequest>) =>
  aggregate({
    operation: 'desktops.provision',
    params: { user: 'bench', pool: 'standard' },
    idempotencyKey: randomUUID(),
    ...extra,
  });

/** First-fit with room in the entry's own pod vs MODE_ALL scoped to it; WAN bytes show whether anything crossed the WAN. */
async function ownPodSeries(f: DevFederation, aggregate: Aggregate, n: number, progress: Progress) {
  let bytes = wanBytes(f);
  const scopedAll = await timed(n, progress, 'placement: MODE_ALL scoped to the own pod', () =>
    place(aggregate, { scope: { sites: [], pods: ['s1/p1'] } }),
  );
  const scopedBytes = (wanBytes(f) - bytes) / n;
  bytes = wanBytes(f);
  let listed = 0;
  const first = await timed(n, progress, 'placement: MODE_FIRST, room in the own pod', async () => {
    listed += (await place(aggregate, { mode: Mode.MODE_FIRST })).pods.length;
  });
  const firstBytes = (wanBytes(f) - bytes) / n;
  return {
    result: {
      first: summarize(first),
      scopedAll: summarize(scopedAll),
      wanBytesPerCall: { first: Math.round(firstBytes), scopedAll: Math.round(scopedBytes) },
      podsListed: listed / n,
    },
    series: { scopedAll, first },
  };
}

/** First-fit placed in the preferred remote site vs one warm WAN call (a LocalRequest to a pod of s2, as the entry sends it). */
async function preferredRemoteSeries(
  f: DevFederation,
  aggregate: Aggregate,
  counts: BenchCounts,
  progress: Progress,
) {
  const n = counts.requests;
  const remote = f.brokers.find((b) => b.site === 's2' && b.pod === 'p1')!;
  const wanClient = f.track(new FederationServiceClient(remote.wanAddress, f.brokerCredentials));
  const warmWanCall = () =>
    unary((cb) =>
      wanClient.localRequest(
        LocalRequest.fromPartial({
          operation: 'sessions.find',
          params: { user: 'alice' },
          hops: 1,
          sourceSite: 's1',
          deadline: msToDuration(5000),
          target: { site: 's2', pod: 'p1', endpoints: [] },
        }),
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        cb,
      ),
    );
  await timed(counts.smoke ? 5 : 50, progress, 'placement: warm-up WAN', warmWanCall);
  const limit = await timed(n, progress, 'placement: limit (1 warm WAN call)', warmWanCall);
  let listed = 0;
  const preferred = await timed(n, progress, 'placement: MODE_FIRST, preferred remote site', async () => {
    listed += (await place(aggregate, { mode: Mode.MODE_FIRST, preferSites: ['s2'] })).pods.length;
  });
  return {
    result: { first: summarize(preferred), limit: summarize(limit), podsListed: listed / n },
    series: { limit, preferred },
  };
}

/** min_ok = pods − 1 with the last pod 3 s slow, vs MODE_ALL with every pod healthy. */
async function quorumSeries(
  aggregate: Aggregate,
  topo: { sites: number; podsPerSite: number },
  n: number,
  progress: Progress,
) {
  const q = Math.max(10, Math.round(n / 5));
  const pods = topo.sites * topo.podsPerSite;
  const slowPod = `s${topo.sites}/p${topo.podsPerSite}`;
  const healthyAll = await timed(q, progress, 'placement: MODE_ALL, all healthy', () =>
    aggregate({ operation: 'echo' }),
  );
  let cancelled = 0;
  const quorum = await timed(q, progress, `placement: min_ok ${pods - 1}, ${slowPod} 3 s slow`, async () => {
    const r = await aggregate({
      operation: 'echo',
      minOk: pods - 1,
      params: { sleepMs: 3000, sleepPod: slowPod },
    });
    cancelled += r.summary?.failedByCode.CANCELLED ?? 0;
  });
  return {
    result: {
      minOk: pods - 1,
      pods,
      slowPod,
      quorum: summarize(quorum),
      healthyAll: summarize(healthyAll),
      cancelled: cancelled / q,
    },
    series: { healthyAll, quorum },
  };
}

/** GPU desktops in use per pod. */
async function gpuInUse(aggregate: Aggregate): Promise<Record<string, number>> {
  const r = await aggregate({ operation: 'pods.capacity' });
  return Object.fromEntries(
    r.pods.map((p) => [
      `${p.site}/${p.pod}`,
      (p.result?.pools as Record<string, { inUse: number }>)?.gpu?.inUse ?? NaN,
    ]),
  );
}

/** `users` users placed at once (GPU pool, home site first): each must end with exactly one GPU desktop. */
async function burstOfUsers(
  aggregate: Aggregate,
  users: number,
  progress: Progress,
): Promise<PlacementResult['burst']> {
  const before = await gpuInUse(aggregate);
  const names = Array.from({ length: users }, (_, i) => `burst${i}`);
  progress.start(`placement: ${users} users at once`, users);
  const latencies: number[] = [];
  const placedByPod: Record<string, number> = {};
  let failedCalls = 0;
  await Promise.all(
    names.map(async (user) => {
      const t0 = performance.now();
      try {
        const r = await aggregate({
          operation: 'desktops.provision',
          params: { user, pool: 'gpu' },
          mode: Mode.MODE_FIRST,
          preferSites: ['s1'],
          idempotencyKey: randomUUID(),
        });
        const won = r.pods.find((p) => p.code === 0);
        if (won) placedByPod[`${won.site}/${won.pod}`] = (placedByPod[`${won.site}/${won.pod}`] ?? 0) + 1;
        else failedCalls++;
      } catch {
        failedCalls++;
      }
      latencies.push(performance.now() - t0);
      progress.tick();
    }),
  );
  const after = await gpuInUse(aggregate);
  const inUseRiseByPod = Object.fromEntries(
    Object.keys(after)
      .map((k) => [k, after[k]! - before[k]!] as const)
      .filter(([, d]) => d !== 0),
  );
  let usersWithOneDesktop = 0;
  for (const user of names) {
    const r = await aggregate({ operation: 'sessions.find', params: { user } });
    const gpu = r.pods
      .flatMap((p) => (p.result?.desktops as { pool: string }[] | undefined) ?? [])
      .filter((d) => d.pool === 'gpu');
    if (gpu.length === 1) usersWithOneDesktop++;
  }
  return {
    users,
    latency: summarize(latencies),
    usersWithOneDesktop,
    usersWithOtherCounts: users - usersWithOneDesktop,
    placedByPod,
    inUseRiseByPod,
    failedCalls,
  };
}

/** Human lines for the placement part. */
export function describePlacement(r: PlacementResult): string {
  const x = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
  const row = (label: string, s: LatencySummary) => [
    label,
    String(s.p50Ms),
    String(s.p90Ms),
    String(s.p99Ms),
    String(s.maxMs),
  ];
  const rows = [
    row('MODE_ALL scoped to the own pod', r.ownPod.scopedAll),
    row('MODE_FIRST, room in the own pod', r.ownPod.first),
    row('limit: 1 warm WAN call', r.preferredRemote.limit),
    row('MODE_FIRST, preferred remote site', r.preferredRemote.first),
    row('MODE_ALL echo, all healthy', r.quorum.healthyAll),
    row(`min_ok ${r.quorum.minOk} of ${r.quorum.pods}, ${r.quorum.slowPod} 3 s slow`, r.quorum.quorum),
    row(`${r.burst.users} users at once (GPU, home site first)`, r.burst.latency),
  ];
  return [
    table(['PLACEMENT (ms)', 'P50', 'P90', 'P99', 'MAX'], rows),
    `own pod: first-fit p50 / scoped MODE_ALL p50 = ${x(r.ownPod.first.p50Ms, r.ownPod.scopedAll.p50Ms)} (target ≤ 1.1×); pods listed per answer ${r.ownPod.podsListed.toFixed(2)}; WAN bytes per call ${r.ownPod.wanBytesPerCall.first} (scoped MODE_ALL: ${r.ownPod.wanBytesPerCall.scopedAll}; keepalive only = no WAN request)`,
    `preferred remote site: first-fit p50 / 1 warm WAN call p50 = ${x(r.preferredRemote.first.p50Ms, r.preferredRemote.limit.p50Ms)} (target ≤ 1.1×); pods listed per answer ${r.preferredRemote.podsListed.toFixed(2)}`,
    `quorum: min_ok p50 / healthy MODE_ALL p50 = ${x(r.quorum.quorum.p50Ms, r.quorum.healthyAll.p50Ms)} (target ≤ 1.1×); pods cancelled per answer ${r.quorum.cancelled.toFixed(2)}`,
    `burst: ${r.burst.usersWithOneDesktop}/${r.burst.users} users with exactly one GPU desktop (${r.burst.usersWithOtherCounts} with another count), ${r.burst.failedCalls} calls without a placement; placed by pod ${JSON.stringify(r.burst.placedByPod)}; inUse rise by pod ${JSON.stringify(r.burst.inUseRiseByPod)} (must match)`,
  ].join('\n');
}
