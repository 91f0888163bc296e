import * as grpc from '@grpc/grpc-js';
import {
  FederationServiceClient,
  Hedging,
  LocalRequest,
  msToDuration,
  type AggregateResponse,
} from '@wanas/proto';
import { DevFederation, type DevBroker } from '@wanas/devfed';
import { summarize, type LatencySummary } from './stats';

/** Reports progress: `total` steps announced once, then `tick()` per step. */
export interface Progress {
  start(label: string, total: number): void;
  tick(n?: number): void;
}

/** Request counts of a run (smaller with --quick). */
export interface BenchCounts {
  requests: number;
  slowAlternatives: number;
  throughputSeconds: number;
  /** Tiny topologies (2 sites × 2 pods) so every part runs in seconds: a smoke test, not a measurement. */
  smoke?: boolean;
  /** Warm channels per remote site / other pod in the failover part (the topology setting; default 1). */
  warmPerTarget?: number;
  /** The brokers' `settings.hedge` in the failover part (default true, the broker default). */
  hedge?: boolean;
  /** mTLS in the latency part (brokers, the limit and every alternative). */
  tls?: boolean;
}

/** The part's topology, or a tiny one in smoke mode. */
export function shape(counts: BenchCounts, sites: number, podsPerSite: number, brokersPerPod: number) {
  return counts.smoke
    ? { sites: 2, podsPerSite: 2, brokersPerPod: Math.min(2, brokersPerPod) }
    : { sites, podsPerSite, brokersPerPod };
}

/** A 5 s deadline, as a Duration. */
export const SEC5 = msToDuration(5000);

/** A unary grpc-js call as a promise. */
export function unary<Res>(
  start: (cb: (e: grpc.ServiceError | null, r?: Res) => void) => void,
): Promise<Res> {
  return new Promise((resolve, reject) => start((e, r) => (e ? reject(e) : resolve(r as Res))));
}

/** Runs `fn` `n` times in sequence; the latency of each, ms. */
export async function timed(
  n: number,
  progress: Progress,
  label: string,
  fn: () => Promise<unknown>,
): Promise<number[]> {
  progress.start(label, n);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
    progress.tick();
  }
  return out;
}

/** Bytes that crossed the emulated WAN so far, both ways. */
export function wanBytes(f: DevFederation): number {
  return f.wan.snapshot().links.reduce((n, l) => n + l.bytesIn + l.bytesOut, 0);
}

/** Pods of the bench federation as [site, pod, brokers]. */
export function pods(f: DevFederation): { site: string; pod: string; brokers: DevBroker[] }[] {
  const m = new Map<string, { site: string; pod: string; brokers: DevBroker[] }>();
  for (const b of f.brokers) {
    const k = `${b.site}/${b.pod}`;
    if (!m.has(k)) m.set(k, { site: b.site, pod: b.pod, brokers: [] });
    m.get(k)!.brokers.push(b);
  }
  return [...m.values()];
}

/** The query most parts measure. */
export const FIND = { operation: 'sessions.find', params: { user: 'alice' } };

/** Waits (at most 20 s) until an aggregate gets every pod's answer: peers started late may still be in reconnect backoff. */
export async function untilAllAnswer(
  aggregate: (r: object) => Promise<AggregateResponse>,
  pods: number,
): Promise<void> {
  const until = Date.now() + 20_000;
  while (Date.now() < until) {
    if (((await aggregate({ operation: 'echo' })).summary?.podsOk ?? 0) === pods) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the federation did not answer from all ${pods} pods within 20 s`);
}

/** JSON of the failover part. */
export interface FailoverResult {
  part: 'failover';
  healthy: LatencySummary;
  kill: { first10: LatencySummary; next: LatencySummary; podsAnswered: number; killed: string[] };
  freeze: { first10: LatencySummary; next: LatencySummary; podsAnswered: number; frozen: string[] };
  attemptTimeoutMs: number;
  warmPerTarget: number;
  hedge: boolean;
}

/**
 * SIGKILL (then, on a fresh federation, SIGSTOP) the first-ordered broker of every pod — the ones that
 * just answered, site representatives included (not the entry broker) — and measure the next requests.
 */
export async function failoverPart(counts: BenchCounts, progress: Progress): Promise<FailoverResult> {
  const attemptTimeoutMs = 250;
  const run = async (signal: 'SIGKILL' | 'SIGSTOP') => {
    const f = await DevFederation.start({
      ...shape(counts, 4, 3, 2),
      wanLatencyMs: 25,
      settings: { attemptTimeoutMs, warmPerTarget: counts.warmPerTarget ?? 1, hedge: counts.hedge ?? true },
    });
    try {
      const entry = 's1-p1-a';
      const aggregate = f.aggregator(entry);
      await timed(counts.smoke ? 5 : 50, progress, `failover (${signal}): warm-up`, () => aggregate(FIND));
      await untilAllAnswer(aggregate, new Set(f.brokers.map((b) => `${b.site}/${b.pod}`)).size);
      const healthy = await timed(counts.requests / 2, progress, `failover (${signal}): healthy`, () =>
        aggregate(FIND),
      );
      // The brokers that answered the last request (site representatives and pod brokers): one per pod.
      // Not every broker in the attempts: a hedge may have asked a pod's twin too, and freezing both
      // brokers of a pod would measure a pod that is down, not a failover.
      const last = await aggregate(FIND);
      const byPod = new Map<string, string>();
      for (const p of last.pods) {
        for (const a of p.attempts) {
          if (a.code !== 0 || a.brokerId === entry) continue;
          const b = f.broker(a.brokerId);
          if (!byPod.has(`${b.site}/${b.pod}`)) byPod.set(`${b.site}/${b.pod}`, b.id);
        }
      }
      const victims = new Set(byPod.values());
      for (const id of victims) f.broker(id).proc!.kill(signal);
      let ok = 0;
      let asked = 0;
      const slowMs = 3 * summarize(healthy).p50Ms;
      const measure = async () => {
        const t0 = performance.now();
        const r = await aggregate(FIND);
        ok += r.summary?.podsOk ?? 0;
        asked += r.summary?.podsAsked ?? 0;
        // WANAS_BENCH_VERBOSE=1: every attempt of the slow requests, to see where the time went.
        if (process.env.WANAS_BENCH_VERBOSE && performance.now() - t0 > slowMs) {
          const at = (a: { brokerId: string; code: number; latency?: { seconds: number; nanos: number } }) =>
            `${a.brokerId}:${a.code}:${Math.round((a.latency?.seconds ?? 0) * 1000 + (a.latency?.nanos ?? 0) / 1e6)}`;
          process.stderr.write(
            `\n${signal} slow request ${Math.round(performance.now() - t0)} ms: ${r.pods.map((p) => `${p.site}/${p.pod} [${p.attempts.map(at).join(',')}]`).join(' ')}\n`,
          );
        }
      };
      const first10 = await timed(10, progress, `failover (${signal}): first 10 after`, measure);
      const next = await timed(counts.requests, progress, `failover (${signal}): next`, measure);
      if (signal === 'SIGSTOP') for (const id of victims) f.broker(id).proc!.kill('SIGCONT');
      return {
        healthy,
        first10: summarize(first10),
        next: summarize(next),
        podsAnswered: ok / asked,
        victims: [...victims].sort(),
      };
    } finally {
      await f.stop();
    }
  };
  const kill = await run('SIGKILL');
  const freeze = await run('SIGSTOP');
  return {
    part: 'failover',
    healthy: summarize([...kill.healthy, ...freeze.healthy]),
    kill: { first10: kill.first10, next: kill.next, podsAnswered: kill.podsAnswered, killed: kill.victims },
    freeze: {
      first10: freeze.first10,
      next: freeze.next,
      podsAnswered: freeze.podsAnswered,
      frozen: freeze.victims,
    },
    attemptTimeoutMs,
    warmPerTarget: counts.warmPerTarget ?? 1,
    hedge: counts.hedge ?? true,
  };
}

/** JSON of the tail part. */
export interface TailResult {
  part: 'tail';
  healthy: LatencySummary;
  hedgingOff: LatencySummary;
  hedgingOn: LatencySummary;
  extraRequestsShare: number;
  series: Record<string, number[]>;
}

/** One broker per site delays 5% of its answers by 500 ms; hedging off vs on. */
export async function tailPart(counts: BenchCounts, progress: Progress): Promise<TailResult> {
  const healthyFed = await DevFederation.start({ ...shape(counts, 4, 3, 2), wanLatencyMs: 25 });
  let healthy: number[];
  try {
    const aggregate = healthyFed.aggregator('s1-p1-a');
    await timed(counts.smoke ? 5 : 50, progress, 'tail: warm-up (healthy)', () => aggregate(FIND));
    await untilAllAnswer(aggregate, new Set(healthyFed.brokers.map((b) => `${b.site}/${b.pod}`)).size);
    healthy = await timed(counts.requests, progress, 'tail: healthy', () => aggregate(FIND));
  } finally {
    await healthyFed.stop();
  }
  const f = await DevFederation.start({
    ...shape(counts, 4, 3, 2),
    wanLatencyMs: 25,
    injectSlow: (b) => (b.pod === 'p1' && b.id.endsWith('-a') && b.site !== 's1' ? '0.05:500' : undefined),
  });
  try {
    const aggregate = f.aggregator('s1-p1-a');
    await timed(counts.smoke ? 5 : 50, progress, 'tail: warm-up', () =>
      aggregate({ ...FIND, hedging: Hedging.HEDGING_ON }),
    );
    await untilAllAnswer(aggregate, new Set(f.brokers.map((b) => `${b.site}/${b.pod}`)).size);
    const off = await timed(counts.requests, progress, 'tail: hedging off', () =>
      aggregate({ ...FIND, hedging: Hedging.HEDGING_OFF }),
    );
    let attempts = 0;
    const on = await timed(counts.requests, progress, 'tail: hedging on', async () => {
      const r = await aggregate({ ...FIND, hedging: Hedging.HEDGING_ON });
      attempts += new Set(
        r.pods.flatMap((p) => p.attempts.filter((a) => a.hedged).map((a) => `${a.brokerId}`)),
      ).size;
    });
    // Requests sent per aggregate without hedging: one per remote site + one per other local pod.
    const basePerAggregate = 3 + 2;
    return {
      part: 'tail',
      healthy: summarize(healthy),
      hedgingOff: summarize(off),
      hedgingOn: summarize(on),
      extraRequestsShare: attempts / (counts.requests * basePerAggregate),
      series: { healthy, hedgingOff: off, hedgingOn: on },
    };
  } finally {
    await f.stop();
  }
}

/** JSON of the throughput part. */
export interface ThroughputResult {
  part: 'throughput';
  wanas: { concurrency: number; aggregatesPerSecond: number; p99Ms: number; errors: number }[];
  rawEcho: { concurrency: number; callsPerSecond: number; p99Ms: number };
}

async function closedLoop(
  seconds: number,
  concurrency: number,
  fn: () => Promise<unknown>,
  progress: Progress,
): Promise<{ done: number; lat: number[]; errors: number }> {
  const end = Date.now() + seconds * 1000;
  const lat: number[] = [];
  let errors = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < end) {
        const t0 = performance.now();
        try {
          await fn();
          lat.push(performance.now() - t0);
        } catch {
          errors++;
        }
        progress.tick();
      }
    }),
  );
  return { done: lat.length, lat, errors };
}

/** 3 sites × 3 pods × 1 broker, no WAN delay, closed loop at 32/64/128 in flight; raw grpc-js echo for scale. */
export async function throughputPart(counts: BenchCounts, progress: Progress): Promise<ThroughputResult> {
  const f = await DevFederation.start({ ...shape(counts, 3, 3, 1), wanLatencyMs: 0 });
  try {
    const aggregate = f.aggregator('s1-p1-a');
    await timed(counts.smoke ? 5 : 100, progress, 'throughput: warm-up', () =>
      aggregate({ operation: 'echo' }),
    );
    await untilAllAnswer(aggregate, new Set(f.brokers.map((b) => `${b.site}/${b.pod}`)).size);
    const wanas = [];
    for (const concurrency of [32, 64, 128]) {
      progress.start(`throughput: wanas × ${concurrency}`, 0);
      let n = 0; // every call distinct: nothing to share
      const r = await closedLoop(
        counts.throughputSeconds,
        concurrency,
        () => aggregate({ operation: 'echo', params: { n: n++ } }),
        progress,
      );
      wanas.push({
        concurrency,
        aggregatesPerSecond: Math.round(r.done / counts.throughputSeconds),
        p99Ms: summarize(r.lat).p99Ms,
        errors: r.errors,
      });
    }
    const c = f.track(
      new FederationServiceClient(f.broker('s1-p2-a').address, grpc.credentials.createInsecure()),
    );
    const req = LocalRequest.fromPartial({
      operation: 'echo',
      hops: 1,
      deadline: SEC5,
      target: { site: 's1', pod: 'p2', endpoints: [] },
    });
    progress.start('throughput: raw grpc-js unary echo × 64', 0);
    const raw = await closedLoop(
      counts.throughputSeconds,
      64,
      () => unary((cb) => c.localRequest(req, cb)),
      progress,
    );
    return {
      part: 'throughput',
      wanas,
      rawEcho: {
        concurrency: 64,
        callsPerSecond: Math.round(raw.done / counts.throughputSeconds),
        p99Ms: summarize(raw.lat).p99Ms,
      },
    };
  } finally {
    await f.stop();
  }
}
