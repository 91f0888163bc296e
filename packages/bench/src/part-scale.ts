import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DevFederation, freePorts, spawnBroker } from '@wanas/devfed';
import { timed, untilAllAnswer, type BenchCounts, type Progress } from './parts';
import { summarize } from './stats';

/** JSON of the scale part. */
export interface ScaleResult {
  part: 'scale';
  podsPerSite: { pods: number; p50Ms: number; p99Ms: number }[];
  sites: { sites: number; p50Ms: number; p99Ms: number }[];
  /** RSS of a broker holding a 100-site × 10-pod topology, its peers answering. */
  bigTopologyRssMb: number;
  /** The same broker once every peer is gone (every channel reconnecting). */
  bigTopologyDeadPeersRssMb: number;
}

/**
 * Pods per site 1 → 4 → 16 (2 sites) and sites 2 → 4 → 8 → 16 (1 pod each), 25 ms one way; one process
 * per broker (32 in the 16-pods case, on this machine's cores). Then the RSS of one broker that loaded a
 * 100-site × 10-pod topology (peers answering, then all gone).
 */
export async function scalePart(counts: BenchCounts, progress: Progress): Promise<ScaleResult> {
  const n = counts.smoke ? counts.requests : Math.max(50, Math.round(counts.requests / 4));
  const measure = async (sites: number, podsPerSite: number, label: string) => {
    const f = await DevFederation.start({
      sites,
      podsPerSite,
      brokersPerPod: 1,
      wanLatencyMs: 25,
    });
    try {
      const aggregate = f.aggregator('s1-p1-a');
      await timed(counts.smoke ? 3 : 30, progress, `${label}: warm-up`, () =>
        aggregate({ operation: 'echo' }),
      );
      await untilAllAnswer(aggregate, sites * podsPerSite);
      let ok = 0;
      const lat = await timed(n, progress, label, async () => {
        ok += (await aggregate({ operation: 'echo' })).summary?.podsOk ?? 0;
      });
      if (ok !== n * sites * podsPerSite)
        throw new Error(`${label}: ${n * sites * podsPerSite - ok} pods did not answer`);
      return summarize(lat);
    } finally {
      await f.stop();
    }
  };
  const podsPerSite = [];
  for (const pods of counts.smoke ? [1, 2] : [1, 4, 16]) {
    const s = await measure(2, pods, `scale: 2 sites × ${pods} pods`);
    podsPerSite.push({ pods, p50Ms: s.p50Ms, p99Ms: s.p99Ms });
  }
  const sites = [];
  for (const count of counts.smoke ? [2, 3] : [2, 4, 8, 16]) {
    const s = await measure(count, 1, `scale: ${count} sites × 1 pod`);
    sites.push({ sites: count, p50Ms: s.p50Ms, p99Ms: s.p99Ms });
  }
  return {
    part: 'scale',
    podsPerSite,
    sites,
    ...(await bigTopologyRss(progress, counts.smoke ? 1000 : 5000).then((r) => ({
      bigTopologyRssMb: r.live,
      bigTopologyDeadPeersRssMb: r.dead,
    }))),
  };
}

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

/**
 * RSS of one broker of a 100-site × 10-pod topology: first with every other broker answering (a peer
 * farm process listens on their 999 addresses), then after the farm is gone (every peer dead: the
 * worst case, every channel reconnecting). Each read after `settleMs`.
 */
async function bigTopologyRss(progress: Progress, settleMs = 5000): Promise<{ live: number; dead: number }> {
  progress.start('scale: 100 sites × 10 pods topology, RSS', 2);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-big-'));
  const ports = await freePorts(1000);
  const lines = ['federation: big', `settings: { dataDir: ${path.join(dir, 'data')} }`, 'sites:'];
  let i = 0;
  for (let s = 1; s <= 100; s++) {
    lines.push(`  - name: s${s}`, '    pods:');
    for (let p = 1; p <= 10; p++)
      lines.push(
        `      - name: p${p}`,
        `        brokers: [{ id: s${s}-p${p}, address: "127.0.0.1:${ports[i++]}" }]`,
      );
  }
  fs.writeFileSync(path.join(dir, 'topology.yaml'), `${lines.join('\n')}\n`);
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
    proc = spawnBroker({ topologyFile: path.join(dir, 'topology.yaml'), id: 's1-p1', logLevel: 'error' });
    proc.stderr?.resume();
    await new Promise((r) => setTimeout(r, settleMs));
    const live = rssMb();
    progress.tick();
    farm.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, settleMs));
    const dead = rssMb();
    progress.tick();
    return { live, dead };
  } finally {
    proc?.kill('SIGKILL');
    farm.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
