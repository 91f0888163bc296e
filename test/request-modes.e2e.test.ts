/**
 * Request modes with real broker processes behind the WAN emulator: first-fit placement (order, full
 * pools, a partitioned preferred site, at most one desktop per user under broker kills), quorum answers
 * (min_ok) with a slow pod in a remote site, and required sites whose failure fails the call with the
 * partial answer as a google.rpc.Status detail — through the TypeScript client and the Python one.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AggregateRequest,
  AggregationServiceClient,
  AggregateResponse,
  Mode,
  RpcStatus,
  type PodResult,
  type StreamAggregateResponse,
} from '@wanas/proto';
import * as path from 'node:path';
import { DevFederation } from '@wanas/devfed';
import { run } from './support/run';
import { sleep, until, untilSiteDown } from './support/until';

const ENTRY = 's1-p1-a';
const PYTHON = '/usr/bin/python3';
const ROOT = path.resolve(__dirname, '..');
/** The partial AggregateResponse a failed call carries as a google.rpc.Status detail. */
function partialResponse(err: grpc.ServiceError): AggregateResponse | undefined {
  const bin = err.metadata.get('grpc-status-details-bin')[0] as Buffer | undefined;
  const detail = bin && RpcStatus.decode(bin).details[0];
  expect(detail?.typeUrl).toBe('type.googleapis.com/wanas.v1.AggregateResponse');
  return detail ? AggregateResponse.decode(detail.value) : undefined;
}
const where = (p: Pick<PodResult, 'site' | 'pod'>) => `${p.site}/${p.pod}`;
/** GPU desktops per pod: none in s1 or s2/p1, 6 in s2/p2, 14 in each pod of s3 (the tests below place 23 there). */
const GPU: Record<string, number> = {
  's1/p1': 0,
  's1/p2': 0,
  's2/p1': 0,
  's2/p2': 6,
  's3/p1': 14,
  's3/p2': 14,
};

describe('request modes (real processes, emulated WAN)', () => {
  let f: DevFederation;
  let aggregate: ReturnType<DevFederation['aggregator']>;
  let keys = 0;
  const ask = (req: Partial<AggregateRequest>, deadlineMs = 10_000) => aggregate(req, deadlineMs);
  const place = (user: string, preferSites: string[] = [], key = `k-${user}-${++keys}`) =>
    ask({
      operation: 'desktops.provision',
      params: { user, pool: 'gpu' },
      mode: Mode.MODE_FIRST,
      preferSites,
      idempotencyKey: key,
    });
  const gpuInUse = async () => {
    const res = await ask({ operation: 'pods.capacity' });
    return Object.fromEntries(
      res.pods.map((p) => [where(p), (p.result?.pools as Record<string, { inUse: number }>).gpu?.inUse ?? 0]),
    );
  };
  const desktopsOf = async (user: string) => {
    const res = await ask({ operation: 'sessions.find', params: { user } });
    expect(res.summary?.podsFailed).toBe(0);
    return res.pods.flatMap((p) =>
      (p.result?.desktops as { id: string; pool: string }[]).filter((d) => d.pool === 'gpu'),
    );
  };
  const allAnswer = async () => (await ask({ operation: 'echo' })).summary?.podsFailed === 0;
  /** The `served` lines every broker logged for a correlation id: one per hop, with where it ran. */
  const served = (correlationId: string) =>
    f.brokers.flatMap((b) =>
      f
        .logs(b.id)
        .filter((l) => l.message === 'served' && l.correlationId === correlationId)
        .map((l) => ({
          site: b.site,
          pod: b.pod,
          kind: l.kind,
          code: l.code,
          latencyMs: l.latencyMs as number,
        })),
    );

  beforeAll(async () => {
    f = await DevFederation.start({
      sites: 3,
      podsPerSite: 2,
      brokersPerPod: 2,
      wanLatencyMs: 10,
      settings: { attemptTimeoutMs: 300 },
      pools: (site, pod) => ({ standard: 12, gpu: GPU[`${site}/${pod}`]! }),
      // Every hop logs what it served: the tests below read when each one ended, and how.
      logLevel: 'info',
    });
    aggregate = f.aggregator(ENTRY);
    await until('every pod answers', allAnswer, 20_000);
    for (let i = 0; i < 10; i++) await ask({ operation: 'echo' });
  }, 90_000);
  afterAll(async () => {
    if (process.env.SHOW_LOGS) for (const b of f.brokers) console.log(b.id, f.logTail(b.id));
    await f?.stop();
  });

  it("places in the entry's own pod first, with no other pod asked", async () => {
    const res = await ask({
      operation: 'desktops.provision',
      params: { user: 'olga', pool: 'standard' },
      mode: Mode.MODE_FIRST,
      idempotencyKey: 'k-olga',
    });
    expect(res.pods.map((p) => [where(p), p.code, p.answeredBy])).toEqual([['s1/p1', 0, ENTRY]]);
    expect(res.summary).toMatchObject({ podsAsked: 1, podsOk: 1 });
  });

  it('tries the preferred site first (its representative searching its pods), and lists every pod tried in order', async () => {
    const res = await place('pia', ['s2']);
    const winner = res.pods.at(-1)!;
    expect(where(winner)).toBe('s2/p2');
    expect(winner.code).toBe(0);
    expect((winner.result?.desktop as { id: string }).id).toMatch(/^s2\.p2\.gpu-/);
    // Before it, only s2/p1 (if the representative was in p1), full.
    for (const p of res.pods.slice(0, -1)) {
      expect(where(p)).toBe('s2/p1');
      expect(p.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(p.message).toMatch(/pool "gpu" of s2\/p1 has no free desktop/);
    }
    expect(res.summary?.podsOk).toBe(1);
  });

  it('moves on from full pools: preferred site, then the own site (own pod first), then the next site', async () => {
    const before = await gpuInUse();
    // Fill s2/p2 (6 GPU desktops, 1 taken above).
    for (let i = 0; i < GPU['s2/p2']! - before['s2/p2']!; i++)
      expect((await place(`fill${i}`, ['s2'])).summary?.podsOk).toBe(1);
    const res = await place('quinn', ['s2']);
    const order = res.pods.map(where);
    expect(order.slice(0, 2).sort()).toEqual(['s2/p1', 's2/p2']);
    expect(order.slice(2, 4)).toEqual(['s1/p1', 's1/p2']);
    expect(order[4]).toMatch(/^s3\//);
    expect(order).toHaveLength(5);
    expect(res.pods.slice(0, 4).map((p) => p.code)).toEqual(Array(4).fill(grpc.status.RESOURCE_EXHAUSTED));
    expect(res.pods[4]!.code).toBe(0);
    expect(res.summary).toMatchObject({
      podsAsked: 5,
      podsOk: 1,
      podsFailed: 4,
      failedByCode: { RESOURCE_EXHAUSTED: 4 },
    });
  });

  it('skips a partitioned preferred site as soon as it is known down, without an attempt', async () => {
    f.wan.cut('s2');
    try {
      await untilSiteDown(() => f.status(ENTRY), 's2');
      const res = await place('rita', ['s2']);
      const s2 = res.pods.filter((p) => p.site === 's2');
      expect(s2.map((p) => [p.code, p.attempts.length])).toEqual([
        [grpc.status.UNAVAILABLE, 0],
        [grpc.status.UNAVAILABLE, 0],
      ]);
      expect(s2[0]!.message).toMatch(/s2 is down since/);
      expect(res.pods.at(-1)).toMatchObject({ site: 's3', code: 0 });

      // min_ok that can no longer be reached answers at once, without waiting for the 3 s pod.
      const t0 = Date.now();
      const q = await ask({ operation: 'echo', minOk: 5, params: { sleepMs: 3000, sleepPod: 's3/p2' } });
      expect(Date.now() - t0).toBeLessThan(2500);
      expect(q.pods.find((p) => where(p) === 's3/p2')).toMatchObject({
        code: grpc.status.CANCELLED,
        message: expect.stringMatching(/min_ok 5 can no longer be reached \(\d of 6 pods failed\)/),
      });

      // A required site that is down fails the call at once, naming its pods, with the partial answer.
      const err = await ask({ operation: 'echo', requiredSites: ['s2'] }).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      expect(err?.code).toBe(grpc.status.UNAVAILABLE);
      expect(err?.details).toMatch(
        /required site\(s\) s2: 2 pod\(s\) failed: s2\/p1 UNAVAILABLE .*s2\/p2 UNAVAILABLE/,
      );
      // It failed at once: the pods not answered by then were not waited for.
      const partial = partialResponse(err!)!;
      expect(partial.pods).toHaveLength(6);
      for (const p of partial.pods.filter((x) => x.site !== 's2')) {
        if (p.code !== 0) expect(p.message).toMatch(/not waited for: s2\/p\d of a required site failed/);
      }

      // The same through the Python client: the status and the partial answer from the details.
      const py = await python(['--op', 'echo', '--require-site', 's2', '--json']);
      expect(py.status).toBe(1);
      expect(py.stderr).toMatch(/^error: UNAVAILABLE: required site\(s\) s2: 2 pod\(s\) failed/);
      expect((JSON.parse(py.stdout) as AggregateResponse).pods).toHaveLength(6);
    } finally {
      f.wan.heal('s2');
    }
    await until('every pod answers', allAnswer, 15_000);
  });

  it('answers at min_ok without waiting for a slow pod that shares a remote site with pods it needs', async () => {
    const t0 = Date.now();
    const res = await ask({ operation: 'echo', minOk: 5, params: { sleepMs: 3000, sleepPod: 's3/p2' } });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(res.pods.find((p) => where(p) === 's3/p1')).toMatchObject({ code: 0 });
    expect(res.pods.find((p) => where(p) === 's3/p2')).toMatchObject({
      code: grpc.status.CANCELLED,
      message: 'not needed: min_ok 5 reached',
    });
    expect(res.summary).toMatchObject({ podsAsked: 6, podsOk: 5, failedByCode: { CANCELLED: 1 } });
  });

  it("stops the slow pod's work on its own broker once min_ok is reached (the cancel crosses the WAN)", async () => {
    const correlationId = `quorum-cancel-${Date.now()}`;
    const res = await ask({
      correlationId,
      operation: 'echo',
      minOk: 5,
      params: { sleepMs: 3000, sleepPod: 's3/p2' },
    });
    expect(res.pods.find((p) => where(p) === 's3/p2')).toMatchObject({ code: grpc.status.CANCELLED });
    // The hop that ran s3/p2's echo (a LocalRequest, or the representative itself) ended CANCELLED, long
    // before the 3 s it was asked to sleep.
    let hop: ReturnType<typeof served>[number] | undefined;
    await until('the s3/p2 hop ends', async () => {
      hop = served(correlationId).find((h) => h.site === 's3' && h.pod === 'p2');
      return hop !== undefined;
    });
    expect(hop!.code).toBe('CANCELLED');
    expect(hop!.latencyMs).toBeLessThan(1500);
  });

  it("moves a first-fit read past a slow preferred pod within the caller's own deadline, and ends that pod's work", async () => {
    const correlationId = `first-deadline-${Date.now()}`;
    const t0 = Date.now();
    // Only the caller's gRPC deadline (2 s): no timeout field.
    const res = await ask(
      {
        correlationId,
        operation: 'echo',
        mode: Mode.MODE_FIRST,
        preferSites: ['s2'],
        scope: { sites: [], pods: ['s2/p1', 's1/p2'] },
        params: { sleepMs: 5000, sleepPod: 's2/p1' },
      },
      2000,
    );
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(res.pods.map((p) => where(p))).toEqual(['s2/p1', 's1/p2']);
    expect(res.pods[0]!.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(res.pods[1]!.code).toBe(0);
    // s2/p1's echo did not sleep its 5 s: the hop that ran it ended with the SiteRequest's attempt.
    await until('the s2/p1 hop ends', async () =>
      served(correlationId).some((h) => h.site === 's2' && h.pod === 'p1'),
    );
    for (const h of served(correlationId).filter((x) => x.site === 's2'))
      expect(h.latencyMs).toBeLessThan(1500);
  });

  it('ends every hop of a first-fit search soon after the caller cancels', async () => {
    const correlationId = `first-cancel-${Date.now()}`;
    const client = f.track(new AggregationServiceClient(f.broker(ENTRY).address, f.clientCredentials));
    const err = await new Promise<grpc.ServiceError | null>((resolve) => {
      const call = client.aggregate(
        AggregateRequest.fromPartial({
          correlationId,
          operation: 'echo',
          mode: Mode.MODE_FIRST,
          preferSites: ['s2'],
          params: { sleepMs: 4000 },
          timeout: { seconds: 10, nanos: 0 },
          // Long attempts: only the cancel can end the search early.
          attemptTimeout: { seconds: 5, nanos: 0 },
        }),
        new grpc.Metadata(),
        { deadline: Date.now() + 15_000 },
        (e) => resolve(e),
      );
      setTimeout(() => call.cancel(), 300);
    });
    expect(err?.code).toBe(grpc.status.CANCELLED);
    // The entry, s2's representative and any LocalRequest it made: each logged CANCELLED, well before 4 s.
    await until('the entry and s2 logged their hops', async () => {
      const hops = served(correlationId);
      return hops.some((h) => h.kind === 'aggregate') && hops.some((h) => h.site === 's2');
    });
    await sleep(500);
    const hops = served(correlationId);
    expect(hops.filter((h) => h.site !== 's1' && h.site !== 's2')).toEqual([]); // the search never got further
    for (const h of hops) {
      expect(h.code).toBe('CANCELLED');
      expect(h.latencyMs).toBeLessThan(1500);
    }
  });

  it("fails a call whose required site has a slow pod, with the pod's own code and the partial answer", async () => {
    const err = await ask({
      operation: 'echo',
      requiredSites: ['s3'],
      timeout: { seconds: 1, nanos: 0 },
      params: { sleepMs: 5000, sleepPod: 's3/p2' },
    }).then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    expect(err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(err?.details).toMatch(/required site\(s\) s3: 1 pod\(s\) failed: s3\/p2 DEADLINE_EXCEEDED/);
    const partial = partialResponse(err!)!;
    expect(partial.summary).toMatchObject({ podsAsked: 6, podsOk: 5 });
  });

  it('streams a first-fit search pod by pod (StreamAggregate), then the summary', async () => {
    const client = f.track(new AggregationServiceClient(f.broker(ENTRY).address, f.clientCredentials));
    const call = client.streamAggregate({
      request: AggregateRequest.fromPartial({
        operation: 'desktops.provision',
        params: { user: 'tess', pool: 'gpu' },
        mode: Mode.MODE_FIRST,
        preferSites: ['s1'],
        idempotencyKey: 'k-tess',
      }),
    });
    const events: StreamAggregateResponse[] = [];
    await new Promise<void>((resolve, reject) => {
      call.on('data', (e: StreamAggregateResponse) => events.push(e));
      call.on('end', resolve);
      call.on('error', reject);
    });
    const pods = events.flatMap((e) => (e.event?.$case === 'pod' ? [e.event.pod] : []));
    expect(pods.slice(0, 2).map((p) => [where(p), p.code])).toEqual([
      ['s1/p1', grpc.status.RESOURCE_EXHAUSTED],
      ['s1/p2', grpc.status.RESOURCE_EXHAUSTED],
    ]);
    expect(pods.at(-1)).toMatchObject({ site: 's3', code: 0 });
    const done = events.at(-1)?.event;
    expect(done?.$case).toBe('done');
    if (done?.$case === 'done')
      expect(done.done.summary).toMatchObject({ podsAsked: pods.length, podsOk: 1 });
  });

  it('takes the modes from the command line: --min-ok, and --require-site printing the partial answer', async () => {
    const cli = (args: string[]) =>
      run(process.execPath, [
        path.join(ROOT, 'packages/cli/dist/bin.js'),
        'aggregate',
        '--address',
        f.broker(ENTRY).address,
        ...args,
      ]);
    const quorum = await cli([
      '--op',
      'echo',
      '--min-ok',
      '5',
      '-p',
      'sleepMs=3000',
      '-p',
      'sleepPod=s3/p2',
      '--json',
    ]);
    expect(quorum.status).toBe(0);
    expect((JSON.parse(quorum.stdout) as { summary: { podsOk: number } }).summary.podsOk).toBe(5);
    const required = await cli([
      '--op',
      'echo',
      '--require-site',
      's3',
      '--timeout',
      '1s',
      '-p',
      'sleepMs=5000',
      '-p',
      'sleepPod=s3/p2',
    ]);
    expect(required.status).toBe(1);
    expect(required.stderr).toMatch(
      /^error: DEADLINE_EXCEEDED: required site\(s\) s3: 1 pod\(s\) failed: s3\/p2/,
    );
    expect(required.stdout).toMatch(/^partial answer:\n/);
    expect(required.stdout).toMatch(/s3 +p1 +OK/);
    const bad = await cli(['--op', 'echo', '--first', '--min-ok', '2']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/INVALID_ARGUMENT: min_ok: applies to MODE_ALL only/);
  });

  it('places a user through the Python client (MODE_FIRST, preferred site)', async () => {
    const py = await python([
      '--op',
      'desktops.provision',
      '--param',
      'user=sam',
      '--param',
      'pool=standard',
      '--first',
      '--prefer-site',
      's3',
      '--idempotency-key',
      'k-sam',
      '--json',
    ]);
    expect(py.stderr).toBe('');
    const res = JSON.parse(py.stdout) as { pods: { site: string; code?: number }[] };
    expect(res.pods).toHaveLength(1);
    const quorum = await python(['--op', 'echo', '--min-ok', '4', '--json']);
    expect(quorum.stderr).toBe('');
    expect(
      (JSON.parse(quorum.stdout) as { summary: { podsOk: number } }).summary.podsOk,
    ).toBeGreaterThanOrEqual(4);
    expect(res.pods[0]).toMatchObject({ site: 's3' });
    expect(res.pods[0]!.code ?? 0).toBe(0);
  });

  it('gives every user at most one desktop while brokers are killed mid-search, and exactly one after resends with the same key', async () => {
    const before = await gpuInUse();
    const users = Array.from({ length: 20 }, (_, i) => `mo${i}`);
    const victims = ['s3-p1-a', 's2-p2-a'].map((id) => f.broker(id));
    const calls = users.map((u) =>
      place(u, ['s3'], `k-${u}`).then(
        (r) => r,
        (e: grpc.ServiceError) => e,
      ),
    );
    await sleep(40);
    for (const b of victims) b.proc!.kill('SIGKILL');
    const first = await Promise.all(calls);
    for (const b of victims) await f.startBroker(b);
    await until('every pod answers', allAnswer, 20_000);
    // Resend every user with the same key: the pods replay what they did (or refused), nothing acts twice.
    const again = await Promise.all(users.map((u) => place(u, ['s3'], `k-${u}`)));
    for (const [i, u] of users.entries()) {
      const won = again[i]!.pods.filter((p) => p.code === 0);
      if (won.length !== 1)
        console.log(
          u,
          JSON.stringify(
            first[i] instanceof Error
              ? String(first[i])
              : (first[i] as AggregateResponse).pods.map((p) => [
                  where(p),
                  p.code,
                  p.message,
                  p.attempts.map((a) => `${a.brokerId}:${a.code}:${a.message}`),
                ]),
          ),
          JSON.stringify(again[i]!.pods.map((p) => [where(p), p.code, p.message])),
        );
      expect(won).toHaveLength(1);
      const desktop = (won[0]!.result?.desktop as { id: string }).id;
      const firstAnswer = first[i]!;
      if (!(firstAnswer instanceof Error)) {
        const firstWon = firstAnswer.pods.find((p) => p.code === 0);
        if (firstWon) expect((firstWon.result?.desktop as { id: string }).id).toBe(desktop);
      }
      expect((await desktopsOf(u)).map((d) => d.id)).toEqual([desktop]);
    }
    const after = await gpuInUse();
    const placed = Object.keys(after).reduce((n, k) => n + after[k]! - before[k]!, 0);
    expect(placed).toBe(users.length);
  }, 60_000);

  /** Runs the Python client (asynchronously: the WAN emulator runs in this process). */
  function python(args: string[]) {
    return run(PYTHON, [
      path.join(ROOT, 'examples/clients/python/client.py'),
      '--address',
      f.broker(ENTRY).address,
      ...args,
    ]);
  }
});
