/**
 * `AdminService.Explain` on real brokers behind the WAN emulator: the plan an Aggregate would run, shown
 * without running it, and held against what the Aggregate then does — the same pods asked, in the same
 * order, through the same targets; a site known down is shown skipped and then answered UNAVAILABLE at
 * once. Through the TypeScript client, the CLI (`wanas aggregate --explain`), buf curl and Python.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceClient,
  AggregateRequest,
  Mode,
  type ExplainResponse,
  type PodResult,
} from '@wanas/proto';
import { DevFederation } from '@wanas/devfed';
import * as path from 'node:path';
import { run } from './support/run';
import { until, untilSiteDown } from './support/until';

const ENTRY = 's1-p1-a';
const ROOT = path.resolve(__dirname, '..');
const WANAS = path.join(ROOT, 'packages/cli/dist/bin.js');
const where = (p: Pick<PodResult, 'site' | 'pod'>) => `${p.site}/${p.pod}`;

describe('Explain (real processes, emulated WAN)', () => {
  let f: DevFederation;
  let admin: AdminServiceClient;
  const aggregate = (req: Partial<AggregateRequest>) => f.aggregator(ENTRY)(req, 10_000);
  const explain = (req: Partial<AggregateRequest>) =>
    new Promise<ExplainResponse>((resolve, reject) =>
      admin.explain(
        { request: AggregateRequest.fromPartial(req) },
        new grpc.Metadata(),
        { deadline: Date.now() + 3000 },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );

  beforeAll(async () => {
    f = await DevFederation.start({
      sites: 3,
      podsPerSite: 2,
      brokersPerPod: 2,
      wanLatencyMs: 10,
      logLevel: 'info',
    });
    admin = f.track(new AdminServiceClient(f.broker(ENTRY).address, grpc.credentials.createInsecure()));
    for (let i = 0; i < 10; i++) await aggregate({ operation: 'echo' });
    // The plan test expects every target up: an attempt of the warm-up that failed on a loaded machine
    // leaves its target degraded until its endpoint answers again (traffic and probes bring it back).
    await until(
      'the entry sees every target up',
      async () => {
        await aggregate({ operation: 'echo' });
        const s = await f.status(ENTRY);
        return s.targets.every((t) => !t.state || t.state === 'up');
      },
      30_000,
    );
  }, 90_000);
  afterAll(async () => {
    await f?.stop();
  });

  it('shows the plan without running it, and the Aggregate then asks the same pods in order through the same targets', async () => {
    const plan = await explain({ operation: 'echo', correlationId: 'explained-only' });
    expect(plan).toMatchObject({ operation: 'echo', mode: 'all', plannedBy: ENTRY, hedge: true });
    expect(plan.legs.map((l) => `${l.via}:${l.pods.join(',')}`)).toEqual([
      'own:s1/p1',
      'local:s1/p2',
      'site:s2/p1,s2/p2',
      'site:s3/p1,s3/p2',
    ]);
    for (const leg of plan.legs.slice(1)) {
      expect(leg.targetState).toBe('up');
      expect(leg.skipped).toBe('');
      expect(leg.endpoints.length).toBeGreaterThan(0);
      expect(leg.expectedLatency).toBeDefined(); // measured by the warm-up
    }
    // Nothing was sent: no broker served a federation request under the explained correlation id.
    const served = f.brokers.flatMap((b) =>
      f.logs(b.id).filter((l) => l.correlationId === 'explained-only' && l.kind !== 'admin'),
    );
    expect(served).toEqual([]);

    const res = await aggregate({ operation: 'echo' });
    expect(res.pods.map(where)).toEqual(plan.legs.flatMap((l) => l.pods));
    for (const leg of plan.legs) {
      const brokers = leg.endpoints.map((e) => e.brokerId);
      for (const p of res.pods.filter((x) => leg.pods.includes(where(x)))) {
        if (leg.via === 'own') expect(p.answeredBy).toBe(ENTRY);
        // The broker each pod was reached through is one of the leg's target.
        else expect(brokers).toContain(p.attempts[0]!.brokerId);
      }
    }
  });

  it('orders a first-fit search as the Aggregate walks it', async () => {
    const req = {
      operation: 'desktops.provision',
      params: { user: 'ed', pool: 'gpu' },
      mode: Mode.MODE_FIRST,
      preferSites: ['s3'],
      idempotencyKey: 'explain-ed',
    };
    const plan = await explain(req);
    expect(plan).toMatchObject({ mode: 'first', preferSites: ['s3'], hedge: false });
    expect(plan.legs[0]).toMatchObject({ via: 'site', site: 's3', method: 'StreamSiteRequest' });
    expect(plan.legs[0]!.sitePods).toEqual(['p1', 'p2']);
    const res = await aggregate(req);
    const planned = plan.legs.flatMap((l) => l.pods);
    expect(planned.slice(0, res.pods.length)).toEqual(res.pods.map(where));
    expect(res.pods.at(-1)!.code).toBe(0);
  });

  it('shows a site known down as skipped, and the Aggregate then fails its pods at once without an attempt', async () => {
    f.wan.cut('s2');
    try {
      await untilSiteDown(() => f.status(ENTRY), 's2');
      let plan: ExplainResponse | undefined;
      await until('Explain shows s2 skipped', async () => {
        plan = await explain({ operation: 'echo' });
        return plan.legs.find((l) => l.site === 's2')!.skipped !== '';
      });
      const s2 = plan!.legs.find((l) => l.site === 's2')!;
      expect(s2).toMatchObject({ targetState: 'down' });
      expect(s2.skipped).toMatch(
        /^known down for \d+ ms \(.*\): would answer UNAVAILABLE at once, sending nothing$/,
      );
      expect(s2.endpoints.every((e) => e.state === 'down')).toBe(true);
      const res = await aggregate({ operation: 'echo' });
      for (const p of res.pods.filter((x) => x.site === 's2')) {
        expect(p.code).toBe(grpc.status.UNAVAILABLE);
        expect(p.attempts).toEqual([]);
      }
    } finally {
      f.wan.heal('s2');
    }
    await until(
      'Explain shows s2 up again',
      async () => {
        const plan = await explain({ operation: 'echo' });
        return plan.legs.find((l) => l.site === 's2')!.targetState === 'up';
      },
      20_000,
    );
  });

  it("shows a listing's page window: from the start, then from the token's cursor", async () => {
    const first = await explain({ operation: 'sessions.list', pageSize: 30 });
    // Each of the 6 pods is asked for its share of the page, twice over: 2 × 30 / 6.
    expect(first.page).toMatchObject({ after: '', afterPod: '', limit: 10 });
    expect(first.page!.maxBytes).toBeGreaterThan(4_000_000);
    const page = await aggregate({ operation: 'sessions.list', pageSize: 5 });
    const last = (page.reduced!.sessions as { id: string; site: string; pod: string }[]).at(-1)!;
    const next = await explain({ operation: 'sessions.list', pageSize: 5, pageToken: page.nextPageToken });
    expect(next.page).toMatchObject({ after: last.id, afterPod: `${last.site}/${last.pod}` });
    expect((await explain({ operation: 'echo' })).page).toBeUndefined();
  });

  it('refuses bad input as the Aggregate would, naming the field', async () => {
    const e = (await explain({ operation: 'nope' }).catch((x: unknown) => x)) as grpc.ServiceError;
    expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e.details).toMatch(/^operation: unknown operation "nope"/);
  });

  it('answers through the CLI, buf curl and the Python client', async () => {
    const address = f.broker(ENTRY).address;
    const table = await run('node', [WANAS, 'aggregate', '-a', address, '-o', 'pods.capacity', '--explain']);
    expect(table.stderr).toBe('');
    expect(table.stdout).toMatch(/^pods\.capacity planned by s1-p1-a: 6 pod\(s\) in scope, all legs at once/);
    expect(table.stdout).toMatch(/\n3\s+site\s+s2\/p1,s2\/p2\s+SiteRequest\s+up\s+s2-p\d-[ab]\(\w+\)/);
    const buf = await run(path.join(ROOT, 'node_modules/.bin/buf'), [
      'curl',
      '--protocol',
      'grpc',
      '--http2-prior-knowledge',
      '-d',
      '{"request":{"operation":"sessions.find","params":{"user":"alice"},"scope":{"sites":["s3"]}}}',
      `http://${address}/wanas.v1.AdminService/Explain`,
    ]);
    expect(buf.stderr).toBe('');
    const json = JSON.parse(buf.stdout) as { legs: { site: string; params: unknown }[] };
    expect(json.legs).toEqual([expect.objectContaining({ site: 's3', params: { user: 'alice' } })]);
    const py = await run('/usr/bin/python3', [
      path.join(ROOT, 'examples/clients/python/client.py'),
      '--address',
      address,
      '--op',
      'echo',
      '--explain',
    ]);
    expect(py.stderr).toBe('');
    expect(py.stdout).toMatch(/^echo planned by s1-p1-a: mode all, 6 pod\(s\) in scope\n/);
    expect(py.stdout.trim().split('\n')).toHaveLength(5);
  });
});
