/**
 * The `latency` part: wanas against one warm WAN call (the limit) and the fan-outs a client could build
 * itself. Run it with `npm run bench -- latency`.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceClient,
  FederationServiceClient,
  LocalRequest,
  SiteRequest,
  type AggregateResponse,
} from '@wanas/proto';
import { DevFederation, type DevBroker } from '@wanas/devfed';
import {
  FIND,
  SEC5,
  pods,
  shape,
  timed,
  unary,
  untilAllAnswer,
  wanBytes,
  type BenchCounts,
  type Progress,
} from './parts';
import { summarize, type LatencySummary } from './stats';

/** JSON of the latency part. */
export interface LatencyResult {
  part: 'latency';
  limitMs: number;
  limitP99Ms: number;
  wanas: LatencySummary;
  alternatives: { flat: LatencySummary; flatNewConnection: LatencySummary; sequential: LatencySummary };
  wanConnections: { wanas: number; flat: number };
  /** Sites other than the entry's: the WAN connections wanas needs at least. */
  remoteSites: number;
  wanBytesPerAggregate: { wanas: number; flat: number };
  podsAnswered: { wanas: number; flat: number };
  /** Transport of every call measured: `mtls` or `plaintext`. */
  transport: 'mtls' | 'plaintext';
  /** p50 of an Aggregate to a remote site of 1 pod and of `pods` pods (one broker each), ms. */
  growth: { pods: number; onePodP50Ms: number; manyPodsP50Ms: number };
  series: Record<string, number[]>;
}

/** A client's own calls to every pod (FederationService, as the entry broker would make them), from site s1. */
interface FlatCalls {
  all: { site: string; pod: string; brokers: DevBroker[] }[];
  /** One warm client per pod: its s1 pods over the LAN, every other pod over the WAN. */
  clients: { p: { site: string; pod: string }; c: FederationServiceClient }[];
  dial: (p: { site: string; brokers: DevBroker[] }) => string;
  local: (c: FederationServiceClient, p: { site: string; pod: string }) => Promise<unknown>;
  creds: grpc.ChannelCredentials;
}

function flatCalls(f: DevFederation): FlatCalls {
  const all = pods(f);
  // FederationService calls as the entry broker would make them (its certificate under mTLS).
  const creds = f.brokerCredentials;
  const dial = (p: { site: string; brokers: DevBroker[] }) =>
    p.site === 's1' ? p.brokers[0]!.address : p.brokers[0]!.wanAddress;
  const clients = all.map((p) => ({ p, c: f.track(new FederationServiceClient(dial(p), creds)) }));
  const local = (c: FederationServiceClient, p: { site: string; pod: string }) =>
    unary((cb) =>
      c.localRequest(
        LocalRequest.fromPartial({
          ...FIND,
          hops: 1,
          sourceSite: 's1',
          deadline: SEC5,
          target: { site: p.site, pod: p.pod, endpoints: [] },
        }),
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        cb,
      ),
    );
  return { all, clients, dial, local, creds };
}

/** Flat fan-out with a new connection per call (its own subchannel pool: no other client's warm one). */
function flatNewConnection(flat: FlatCalls): () => Promise<void> {
  return async () => {
    await Promise.all(
      flat.all.map(async (p) => {
        const c = new FederationServiceClient(flat.dial(p), flat.creds, {
          'grpc.use_local_subchannel_pool': 1,
        });
        try {
          await flat.local(c, p);
        } finally {
          c.close();
        }
      }),
    );
  };
}

/** One site after another: the entry's own pods, then one SiteRequest per remote site in turn. */
function sequentialSites(f: DevFederation, flat: FlatCalls): () => Promise<void> {
  const siteClients = new Map(
    [...new Set(flat.all.map((p) => p.site))]
      .filter((s) => s !== 's1')
      .map((s) => [
        s,
        f.track(new FederationServiceClient(f.brokers.find((b) => b.site === s)!.wanAddress, flat.creds)),
      ]),
  );
  return async () => {
    await Promise.all(flat.clients.filter(({ p }) => p.site === 's1').map(({ p, c }) => flat.local(c, p)));
    for (const [site, c] of siteClients) {
      await unary((cb) =>
        c.siteRequest(
          SiteRequest.fromPartial({
            ...FIND,
            hops: 1,
            sourceSite: 's1',
            deadline: SEC5,
            target: { site, pod: '', endpoints: [] },
          }),
          new grpc.Metadata(),
          { deadline: Date.now() + 5000 },
          cb,
        ),
      );
    }
  };
}

/** Times `run` over `n` calls, with the WAN bytes per call and the share of pods that answered OK. */
async function countedSeries(
  f: DevFederation,
  n: number,
  progress: Progress,
  label: string,
  run: () => Promise<number>,
): Promise<{ series: number[]; bytes: number; okShare: number }> {
  const before = wanBytes(f);
  let ok = 0;
  const series = await timed(n, progress, label, async () => {
    ok += await run();
  });
  return { series, bytes: (wanBytes(f) - before) / n, okShare: ok / (n * pods(f).length) };
}

/** WAN channels the entry broker holds ready (to sites other than its own). */
async function entryWanConnections(f: DevFederation, entry: string): Promise<number> {
  const status = await unary<{ channels: { site: string; connectivity: string }[] }>((cb) => {
    const c = f.track(new AdminServiceClient(f.broker(entry).address, f.clientCredentials));
    c.getStatus({}, cb);
  });
  return status.channels.filter((c) => c.site !== 's1' && c.connectivity === 'ready').length;
}

/**
 * 4 sites × 3 pods × 2 brokers, 25 ms one way. wanas vs the limit (one warm unary call to a remote
 * broker) and the alternatives a client could build: flat fan-out to every pod on warm channels, the
 * same with a new connection per call, and one site after another.
 */
export async function latencyPart(counts: BenchCounts, progress: Progress): Promise<LatencyResult> {
  const f = await DevFederation.start({ ...shape(counts, 4, 3, 2), wanLatencyMs: 25, tls: counts.tls });
  try {
    const entry = 's1-p1-a';
    const aggregate = f.aggregator(entry);
    const flat = flatCalls(f);
    const { all } = flat;
    const remote = all.find((p) => p.site === 's2')!;
    const limitClient = flat.clients.find((x) => x.p === remote)!.c;
    const flatOnce = () => Promise.all(flat.clients.map(({ p, c }) => flat.local(c, p)));

    // Warm up JITs and channels.
    await timed(counts.smoke ? 5 : 50, progress, 'latency: warm-up', async () => {
      await aggregate(FIND);
      await flatOnce();
    });
    await untilAllAnswer(aggregate, all.length);

    const limit = await timed(counts.requests, progress, 'latency: limit (1 warm WAN call)', () =>
      flat.local(limitClient, remote),
    );
    const wanas = await countedSeries(f, counts.requests, progress, 'latency: wanas', async () => {
      const r: AggregateResponse = await aggregate(FIND);
      return r.summary?.podsOk ?? 0;
    });
    const flatWarm = await countedSeries(f, counts.requests, progress, 'latency: flat (warm)', async () => {
      const rs = await Promise.allSettled(flat.clients.map(({ p, c }) => flat.local(c, p)));
      return rs.filter((r) => r.status === 'fulfilled').length;
    });
    const flatNew = await timed(
      counts.slowAlternatives,
      progress,
      'latency: flat (new connection per call)',
      flatNewConnection(flat),
    );
    const sequential = await timed(
      counts.slowAlternatives,
      progress,
      'latency: sequential (site after site)',
      sequentialSites(f, flat),
    );
    const l = summarize(limit);
    return {
      part: 'latency',
      limitMs: l.p50Ms,
      limitP99Ms: l.p99Ms,
      wanas: summarize(wanas.series),
      alternatives: {
        flat: summarize(flatWarm.series),
        flatNewConnection: summarize(flatNew),
        sequential: summarize(sequential),
      },
      wanConnections: {
        wanas: await entryWanConnections(f, entry),
        flat: all.filter((p) => p.site !== 's1').length,
      },
      remoteSites: new Set(all.filter((p) => p.site !== 's1').map((p) => p.site)).size,
      wanBytesPerAggregate: { wanas: Math.round(wanas.bytes), flat: Math.round(flatWarm.bytes) },
      podsAnswered: { wanas: wanas.okShare, flat: flatWarm.okShare },
      transport: counts.tls ? 'mtls' : 'plaintext',
      growth: await growthInSite(counts, progress),
      series: {
        limit,
        wanas: wanas.series,
        flat: flatWarm.series,
        flatNewConnection: flatNew,
        sequential,
      },
    };
  } finally {
    await f.stop();
  }
}

/** p50 of an Aggregate from s1 to a remote site s2 of `podsInSite` pods, one broker each, 25 ms one way. */
async function siteP50(podsInSite: number, n: number, progress: Progress): Promise<number> {
  const s2 = Object.fromEntries(Array.from({ length: podsInSite }, (_, i) => [`p${i + 1}`, 1]));
  const f = await DevFederation.start({ spec: { s1: { p1: 1 }, s2 }, wanLatencyMs: 25 });
  try {
    const ask = f.aggregator('s1-p1-a');
    await untilAllAnswer(ask, podsInSite + 1);
    await timed(Math.min(50, n), progress, `latency: growth warm-up (${podsInSite} pods)`, () => ask(FIND));
    const label = `latency: growth, ${podsInSite} pod(s) in a site`;
    return summarize(await timed(n, progress, label, () => ask(FIND))).p50Ms;
  } finally {
    await f.stop();
  }
}

/** How the p50 grows from 1 pod to 16 (2 in smoke mode) in a remote site. */
async function growthInSite(counts: BenchCounts, progress: Progress): Promise<LatencyResult['growth']> {
  const pods = counts.smoke ? 2 : 16;
  const n = Math.max(10, Math.round(counts.requests / 2));
  const onePodP50Ms = await siteP50(1, n, progress);
  return { pods, onePodP50Ms, manyPodsP50Ms: await siteP50(pods, n, progress) };
}
