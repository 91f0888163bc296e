/**
 * The `scale` part: wanas at the product's published limits — 50 pods in 15 sites, 2 brokers a pod (a
 * site's brokers share processes, `brokersPerProcess`), 250,000 sessions — on this machine: idle CPU,
 * sessions.find against one warm WAN call and the same call graph in bare grpc-js, growth 1 → 16 → 50 pods,
 * every session listed page by page (and again through a killed broker process and a partitioned site),
 * and the RSS of one broker holding the full 350-broker topology.
 */
import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DevFederation, freePorts, spawnBroker, waitServing, type FederationSpec } from '@wanas/devfed';
import {
  AdminServiceClient,
  FederationServiceClient,
  LocalRequest,
  type GetStatusResponse,
} from '@wanas/proto';
import { FIND, SEC5, timed, unary, untilAllAnswer, type BenchCounts, type Progress } from './parts';
import { processCpuMs } from './part-cpu';
import { listAll, type ListingResult } from './scale-listing';
import { productSpec, startBareWan } from './scale-shape';
import { summarize, type LatencySummary } from './stats';

/** One-way WAN delay of every federation of the part, ms. */
const WAN_MS = 25;
/**
 * The product-shape federation's failure detection, relaxed from the WAN-tuned defaults (keepalive ping
 * every 600 ms, 500 ms to answer, 500 ms to connect): 100 brokers on 2 shared cores run with event-loop lags
 * of hundreds of ms, which the defaults take for dead peers (a reconnect storm), and their pings on ~17
 * channels a broker cost most of the idle CPU. Idle is measured with the defaults too (`idleDefaults`).
 */
const DENSE_SETTINGS = { keepaliveTimeMs: 5000, keepaliveTimeoutMs: 5000, connectTimeoutMs: 5000 };

/** JSON of the scale part. */
export interface ScaleResult {
  part: 'scale';
  shape: { sites: number; pods: number; brokers: number; processes: number; sessionsPerPod: number };
  /** Idle CPU, % of one core: per broker and per process, over `seconds` (with DENSE_SETTINGS). */
  idle: { seconds: number; perBrokerPct: number; perProcessPct: number };
  /** The same with the default keepalive (ping every 600 ms on every warm channel). */
  idleDefaults: { seconds: number; perBrokerPct: number; perProcessPct: number };
  /** One warm WAN call (a LocalRequest sessions.find to a remote pod). */
  limit: LatencySummary;
  /** sessions.find for one user over every pod. */
  find: LatencySummary;
  /** The same call graph in bare grpc-js over the same emulated WAN. */
  bare: LatencySummary;
  /** CPU per pod asked, ms (every process, idle taken out): wanas, and bare grpc-js. */
  cpuPerPodMs: { wanas: number; bare: number };
  growth: { pods: number; sites: number; p50Ms: number; p99Ms: number }[];
  listing: ListingResult;
  /** One pod's page of 1000 read through a LocalRequest over the LAN (the pods' read cost). */
  podPage: LatencySummary;
  /** The listing through a killed broker process and a partitioned site (on the 16-pod federation). */
  listingWithFaults: ListingResult;
  /** RSS of a broker holding the 350-broker topology, its peers answering, and its channels. */
  bigTopology: {
    brokers: number;
    rssMb: number;
    deadPeersRssMb: number;
    channels: number;
    warmChannels: number;
  };
  series: Record<string, number[]>;
}

/** The part's sizes: the product's, or tiny ones in smoke mode. */
function sizes(counts: BenchCounts) {
  return counts.smoke
    ? {
        pods: 4,
        sites: 2,
        perProcess: 2,
        sessions: 100,
        page: 100,
        growth: [[1, 1]],
        faults: [4, 2],
        idleMs: 1000,
      }
    : {
        pods: 50,
        sites: 15,
        perProcess: 4,
        sessions: 5000,
        page: 1000,
        growth: [
          [1, 1],
          [16, 5],
        ],
        faults: [16, 5],
        idleMs: 10_000,
      };
}

/** Every process of a federation (a process may run several brokers). */
function processesOf(f: DevFederation): number[] {
  return [...new Set(f.brokers.map((b) => b.proc?.pid).filter((p): p is number => p !== undefined))];
}

const cpuOf = (pids: number[]) => pids.reduce((n, pid) => n + processCpuMs(pid), 0);

/** Idle CPU of a federation's processes over `ms`, % of a core. */
async function idleCpu(
  f: DevFederation,
  ms: number,
): Promise<{ perBrokerPct: number; perProcessPct: number; pctPerMs: number }> {
  const pids = processesOf(f);
  const before = cpuOf(pids);
  await new Promise((r) => setTimeout(r, ms));
  const pct = ((cpuOf(pids) - before) / ms) * 100;
  return { perBrokerPct: pct / f.brokers.length, perProcessPct: pct / pids.length, pctPerMs: pct / 100 };
}

/** sessions.find's latencies on a federation of `spec` (settings and processes as the product shape's). */
async function findOn(spec: FederationSpec, n: number, progress: Progress, label: string): Promise<number[]> {
  const f = await DevFederation.start({
    spec,
    wanLatencyMs: WAN_MS,
    brokersPerProcess: 4,
    settings: DENSE_SETTINGS,
  });
  try {
    const aggregate = f.aggregator('s1-p1-a');
    const pods = Object.values(spec).reduce((k, p) => k + Object.keys(p).length, 0);
    await untilAllAnswer(aggregate, pods);
    await timed(Math.min(30, n), progress, `${label}: warm-up`, () => aggregate(FIND));
    return await timed(n, progress, label, () => aggregate(FIND));
  } finally {
    await f.stop();
  }
}

/** A LocalRequest client to one pod's broker (`address`), as a broker of s1 would call it. */
function localCaller(f: DevFederation, address: string, req: Partial<LocalRequest>) {
  const c = f.track(new FederationServiceClient(address, f.brokerCredentials));
  return () =>
    unary((cb) =>
      c.localRequest(
        LocalRequest.fromPartial({ hops: 1, sourceSite: 's1', deadline: SEC5, ...req }),
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        cb,
      ),
    );
}

/** The product-shape federation's measures (idle, limit, find and its CPU, both listings). */
async function atTheLimits(counts: BenchCounts, progress: Progress, n: number) {
  const z = sizes(counts);
  const spec = productSpec(z.pods, z.sites, 2);
  const f = await DevFederation.start({
    spec,
    wanLatencyMs: WAN_MS,
    brokersPerProcess: z.perProcess,
    sessions: () => z.sessions,
    settings: DENSE_SETTINGS,
  });
  try {
    const aggregate = f.aggregator('s1-p1-a');
    await untilAllAnswer(aggregate, z.pods);
    await timed(counts.smoke ? 3 : 50, progress, 'scale: warm-up', () => aggregate(FIND));
    const idle = await idleCpu(f, z.idleMs);
    const remote = f.broker('s2-p1-a');
    const target = { site: 's2', pod: 'p1', endpoints: [] };
    const limit = await timed(
      n,
      progress,
      'scale: limit (1 warm WAN call)',
      localCaller(f, remote.wanAddress, { ...FIND, target }),
    );
    const podPage = await timed(
      Math.min(n, 50),
      progress,
      'scale: one pod reads a page (LAN)',
      localCaller(f, remote.address, {
        operation: 'sessions.list',
        target,
        page: { after: '', afterPod: '', limit: z.page, maxBytes: 4_000_000 },
      }),
    );
    const pids = processesOf(f);
    const cpu0 = cpuOf(pids);
    const t0 = performance.now();
    const find = await timed(n, progress, `scale: sessions.find over ${z.pods} pods`, () => aggregate(FIND));
    const busy = cpuOf(pids) - cpu0 - idle.pctPerMs * (performance.now() - t0);
    const listing = await listAll(f, ['s1-p1-a'], z.page, progress);
    const shape = {
      sites: z.sites,
      pods: z.pods,
      brokers: f.brokers.length,
      processes: pids.length,
      sessionsPerPod: z.sessions,
    };
    return {
      shape,
      idle: { seconds: z.idleMs / 1000, ...idle },
      limit,
      podPage,
      find,
      cpuPerPodMs: busy / n / z.pods,
      listing,
      spec,
    };
  } finally {
    await f.stop();
  }
}

/**
 * The listing through faults, on a federation of `spec` (2 brokers a pod, 2 a process): the process of
 * s2-p1-a killed (s2-p1-a and s2-p2-a) before page 3, the last site partitioned for 5 s before page 6;
 * each fault moves the listing to the next entry broker. Not on the 100-broker federation: on 2 cores the
 * reconnects of 99 brokers to the killed ones took it past its limits (see BENCHMARKS.md).
 */
async function listingThroughFaults(
  spec: FederationSpec,
  sessions: number,
  page: number,
  progress: Progress,
) {
  const f = await DevFederation.start({
    spec,
    wanLatencyMs: WAN_MS,
    brokersPerProcess: 2,
    sessions: () => sessions,
    settings: DENSE_SETTINGS,
  });
  const last = `s${Object.keys(spec).length}`;
  try {
    await untilAllAnswer(
      f.aggregator('s1-p1-a'),
      Object.values(spec).reduce((k, p) => k + Object.keys(p).length, 0),
    );
    return await listAll(f, ['s1-p1-a', 's1-p1-b'], page, progress, [
      { beforePage: 3, what: 'SIGKILL the process of s2-p1-a', act: () => f.signal('s2-p1-a', 'SIGKILL') },
      {
        beforePage: 6,
        what: `partition site ${last} for 5 s`,
        act: () => {
          f.wan.cut(last);
          setTimeout(() => f.wan.heal(last), 5000);
          return Promise.resolve();
        },
      },
    ]);
  } finally {
    await f.stop();
  }
}

/** Idle CPU of the product-shape federation with the default keepalive. */
async function idleWithDefaults(counts: BenchCounts, progress: Progress) {
  const z = sizes(counts);
  progress.start('scale: idle CPU with the default keepalive', 1);
  const f = await DevFederation.start({
    spec: productSpec(z.pods, z.sites, 2),
    wanLatencyMs: WAN_MS,
    brokersPerProcess: z.perProcess,
  });
  try {
    await untilAllAnswer(f.aggregator('s1-p1-a'), z.pods);
    const idle = await idleCpu(f, z.idleMs);
    progress.tick();
    return { seconds: z.idleMs / 1000, perBrokerPct: idle.perBrokerPct, perProcessPct: idle.perProcessPct };
  } finally {
    await f.stop();
  }
}

/** The bare grpc-js federation of `spec`: latency and CPU per pod. */
async function bareOn(spec: FederationSpec, pods: number, n: number, progress: Progress) {
  // About a sessions.find answer's size.
  const bare = await startBareWan(spec, WAN_MS, 'x'.repeat(300));
  try {
    await timed(Math.min(50, n), progress, 'scale: bare grpc-js warm-up', () => bare.aggregate());
    const cpu0 = bare.cpuMs();
    const lat = await timed(n, progress, `scale: bare grpc-js over ${pods} pods`, () => bare.aggregate());
    return { lat, cpuPerPodMs: (bare.cpuMs() - cpu0) / n / pods };
  } finally {
    await bare.stop();
  }
}

export async function scalePart(counts: BenchCounts, progress: Progress): Promise<ScaleResult> {
  // 100 brokers share 2 cores here: at most 100 requests a series.
  const n = counts.smoke ? counts.requests : Math.min(100, Math.max(50, Math.round(counts.requests / 2)));
  const z = sizes(counts);
  const idleDefaults = await idleWithDefaults(counts, progress);
  const limits = await atTheLimits(counts, progress, n);
  const bare = await bareOn(limits.spec, z.pods, n, progress);
  const series: Record<string, number[]> = {
    '1 warm WAN call': limits.limit,
    'bare grpc-js, all pods': bare.lat,
  };
  const growth = [];
  for (const [pods, sites] of z.growth) {
    const lat = await findOn(
      productSpec(pods!, sites!, 2),
      n,
      progress,
      `scale: sessions.find over ${pods} pods`,
    );
    series[`wanas, ${pods} pod(s) in ${sites} site(s)`] = lat;
    growth.push({ pods: pods!, sites: sites!, ...pick(summarize(lat)) });
  }
  series[`wanas, ${z.pods} pods in ${z.sites} sites`] = limits.find;
  const [faultPods, faultSites] = z.faults;
  const listingWithFaults = await listingThroughFaults(
    productSpec(faultPods!, faultSites!, 2),
    z.sessions,
    z.page,
    progress,
  );
  growth.push({ pods: z.pods, sites: z.sites, ...pick(summarize(limits.find)) });
  return {
    part: 'scale',
    shape: limits.shape,
    idle: {
      seconds: limits.idle.seconds,
      perBrokerPct: limits.idle.perBrokerPct,
      perProcessPct: limits.idle.perProcessPct,
    },
    idleDefaults,
    limit: summarize(limits.limit),
    find: summarize(limits.find),
    bare: summarize(bare.lat),
    cpuPerPodMs: { wanas: limits.cpuPerPodMs, bare: bare.cpuPerPodMs },
    growth,
    listing: limits.listing,
    podPage: summarize(limits.podPage),
    listingWithFaults,
    bigTopology: await bigTopology(progress, counts.smoke ? 1000 : 5000),
    series,
  };
}

const pick = (s: LatencySummary) => ({ p50Ms: s.p50Ms, p99Ms: s.p99Ms });

/** A peer farm: one process listening on every given port, answering grpc.health.v1 SERVING. */
const FARM = `
const grpc = require(process.env.GRPC_JS);
const { HealthImplementation } = require(process.env.GRPC_HEALTH);
const ports = JSON.parse(process.env.PORTS);
const server = new grpc.Server();
new HealthImplementation({ '': 'SERVING' }).addToServer(server);
Promise.all(ports.map((p) => new Promise((resolve, reject) =>
  server.bindAsync('127.0.0.1:' + p, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())))))
  .then(() => console.log('ready'), (e) => { console.error(e.message); process.exit(1); });
`;

/** The 350-broker topology of the product's limits: 50 pods in 15 sites, 7 brokers a pod, on `ports`. */
function bigTopologyYaml(dataDir: string, ports: number[]): string {
  const lines = ['federation: big', `settings: { dataDir: ${dataDir} }`, 'sites:'];
  let i = 0;
  for (const [site, pods] of Object.entries(productSpec(50, 15, 7))) {
    lines.push(`  - name: ${site}`, '    pods:');
    for (const [pod, brokers] of Object.entries(pods)) {
      lines.push(`      - name: ${pod}`, '        brokers:');
      for (let b = 0; b < brokers; b++)
        lines.push(`          - { id: ${site}-${pod}-${b}, address: "127.0.0.1:${ports[i++]}" }`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** A broker's channels and how many it keeps warm (GetStatus). */
async function channelsOf(address: string): Promise<{ channels: number; warm: number }> {
  const c = new AdminServiceClient(address, grpc.credentials.createInsecure());
  try {
    const st = await unary<GetStatusResponse>((cb) =>
      c.getStatus({}, new grpc.Metadata(), { deadline: Date.now() + 5000 }, cb),
    );
    return { channels: st.channels.length, warm: st.channels.filter((x) => x.warm).length };
  } finally {
    c.close();
  }
}

/**
 * RSS of one broker of the 350-broker topology (50 pods in 15 sites, 7 brokers a pod): first with every
 * other broker answering (a peer farm process listens on their 349 addresses), then after the farm is gone
 * (every peer dead: the worst case, every channel reconnecting). Each read after `settleMs`.
 */
async function bigTopology(progress: Progress, settleMs = 5000): Promise<ScaleResult['bigTopology']> {
  progress.start('scale: 350-broker topology, RSS', 2);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-big-'));
  const ports = await freePorts(350);
  fs.writeFileSync(path.join(dir, 'topology.yaml'), bigTopologyYaml(path.join(dir, 'data'), ports));
  const farm = spawn(process.execPath, ['-e', FARM], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: {
      ...process.env,
      GRPC_JS: require.resolve('@grpc/grpc-js'),
      GRPC_HEALTH: require.resolve('grpc-health-check'),
      PORTS: JSON.stringify(ports.slice(1)),
    },
  });
  let proc: ReturnType<typeof spawn> | undefined;
  const rssMb = () => {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${proc!.pid}/status`, 'utf8'));
    return Math.round(Number(m?.[1] ?? 0) / 1024);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      farm.stdout!.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
      farm.once('exit', (code) => reject(new Error(`peer farm exited with ${code}`)));
    });
    // As every harness starts a broker (with BROKER_NODE_FLAGS, what the image runs too).
    proc = spawnBroker({ topologyFile: path.join(dir, 'topology.yaml'), id: 's1-p1-0', logLevel: 'error' });
    proc.stderr?.resume();
    // Serving first (a loaded machine takes a while to load 350 brokers), then settled.
    await waitServing(`127.0.0.1:${ports[0]}`, proc, { timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, settleMs));
    const rss = rssMb();
    const { channels, warm } = await channelsOf(`127.0.0.1:${ports[0]}`);
    progress.tick();
    farm.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, settleMs));
    const dead = rssMb();
    progress.tick();
    return { brokers: 350, rssMb: rss, deadPeersRssMb: dead, channels, warmChannels: warm };
  } finally {
    proc?.kill('SIGKILL');
    farm.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
