/**
 * End to end: real `wanas broker` processes on a 3-site topology whose pods have 1 to 3 brokers.
 */
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import {
  AggregateRequest,
  Hedging,
  StreamAggregateResponse,
  msToDuration,
  type AggregateResponse,
} from '@wanas/proto';
import Database from 'better-sqlite3';
import * as path from 'node:path';
import { Federation, ROOT } from './support/federation';
import { run } from './support/run';

const SPEC = {
  'us-east': { 'pod-1': 2, 'pod-2': 1 },
  'eu-west': { 'pod-1': 3, 'pod-2': 1 },
  'ap-south': { 'pod-1': 2 },
};
const ENTRY = 'us-east-pod-1-a';

function byPod(res: AggregateResponse) {
  return new Map(res.pods.map((p) => [`${p.site}/${p.pod}`, p]));
}

function desktopsInDb(f: Federation, pod: string, user: string): string[] {
  const [site, name] = pod.split('/');
  const db = new Database(path.join(f.dir, 'data', `${site}.${name}.sqlite`), { readonly: true });
  try {
    return (
      db.prepare('SELECT id FROM desktops WHERE user = ? ORDER BY id').all(user) as { id: string }[]
    ).map((r) => r.id);
  } finally {
    db.close();
  }
}

/** A ServerReflectionInfo answer, as proto-loader gives it (keepCase). */
interface ReflectionAnswer {
  file_descriptor_response?: { file_descriptor_proto: Uint8Array[] };
}

describe('broker federation (real processes)', () => {
  let f: Federation;
  beforeAll(async () => {
    f = await Federation.start(SPEC, { attemptTimeoutMs: 400 });
  }, 60_000);
  afterAll(async () => {
    await f?.stop();
  });

  /** Peers notice a restarted broker within their reconnect backoff (≤ 1 s): wait until all 5 pods answer (bounded). */
  async function settle(): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if ((await f.aggregate(ENTRY, { operation: 'echo' })).summary?.podsOk === 5) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('answers sessions.find with every pod exactly once and the data each pod holds', async () => {
    // Pick the demo user with desktops in the most pods, from the databases themselves.
    const users = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi'];
    const where = users.map((u) => ({
      u,
      pods: f.allPods().filter((p) => desktopsInDb(f, p, u).length > 0),
    }));
    const best = where.sort((a, b) => b.pods.length - a.pods.length)[0]!;
    expect(best.pods.length).toBeGreaterThanOrEqual(2);

    const res = await f.aggregate(ENTRY, { operation: 'sessions.find', params: { user: best.u } });
    expect(res.pods.map((p) => `${p.site}/${p.pod}`).sort()).toEqual(f.allPods().sort());
    expect(res.summary).toEqual({ podsAsked: 5, podsOk: 5, podsFailed: 0, failedByCode: {} });
    for (const p of res.pods) {
      const ids = ((p.result!.desktops as { id: string }[]) ?? []).map((d) => d.id);
      expect({ pod: `${p.site}/${p.pod}`, ids }).toEqual({
        pod: `${p.site}/${p.pod}`,
        ids: desktopsInDb(f, `${p.site}/${p.pod}`, best.u),
      });
      expect(f.brokers.get(p.answeredBy)?.site).toBe(p.site);
      expect(f.brokers.get(p.answeredBy)?.pod).toBe(p.pod);
    }
    const reduced = res.reduced as { total: number; sessions: { site: string }[] };
    expect(reduced.total).toBe(
      res.pods.reduce((n, p) => n + ((p.result!.sessions as unknown[]) ?? []).length, 0),
    );
    // One WAN request per remote site: remote pods' first attempt went to a broker of that site.
    for (const p of res.pods.filter((x) => x.site !== 'us-east')) {
      expect(f.brokers.get(p.attempts[0]!.brokerId)?.site).toBe(p.site);
    }
  });

  it('echoes the correlation id end to end and logs it on every hop', async () => {
    const correlationId = `e2e-corr-${Date.now()}`;
    // Hedging off: a hedge (a loaded machine's slow answer) would add a served line at a twin (CI saw one).
    const res = await f.aggregate(ENTRY, {
      operation: 'echo',
      correlationId,
      params: { hello: 'world' },
      hedging: Hedging.HEDGING_OFF,
    });
    expect(res.correlationId).toBe(correlationId);
    await new Promise((r) => setTimeout(r, 200)); // let log lines drain
    const served = [...f.brokers.values()].flatMap((b) =>
      b.logs
        .filter((l) => l.correlationId === correlationId && l.direction === 'in')
        .map((l) => ({ broker: b.id, kind: l.kind })),
    );
    const kinds = served.map((s) => s.kind).sort();
    // 1 aggregate; 2 site requests (eu-west, ap-south); local: us-east/pod-2 + eu-west/pod-2 (ap-south has one pod).
    expect(kinds).toEqual(['aggregate', 'local', 'local', 'site', 'site']);
    for (const p of res.pods) {
      const answered = f.brokers.get(p.answeredBy)!;
      const line = answered.logs.find((l) => l.correlationId === correlationId);
      expect(line).toBeDefined();
    }
    // A generated id when the client sends none.
    const gen = await f.aggregate(ENTRY, { operation: 'echo' });
    expect(gen.correlationId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('finds from another site a desktop provisioned in one pod, and never provisions twice for one key', async () => {
    const key = `prov-${Date.now()}`;
    const req = {
      operation: 'desktops.provision',
      params: { user: 'zoe', pool: 'standard' },
      scope: { sites: [], pods: ['eu-west/pod-2'] },
      idempotencyKey: key,
    };
    const first = await f.aggregate(ENTRY, req);
    expect(first.summary?.podsOk).toBe(1);
    const desktop = (first.pods[0]!.result!.desktop as { id: string }).id;
    const again = await f.aggregate('ap-south-pod-1-a', req);
    expect(again.pods[0]!.result).toMatchObject({ desktop: { id: desktop }, replayed: true });
    const conflict = await f.aggregate(ENTRY, { ...req, params: { user: 'zoe', pool: 'gpu' } });
    expect(conflict.pods[0]!.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(desktopsInDb(f, 'eu-west/pod-2', 'zoe')).toEqual([desktop]);

    const found = await f.aggregate('ap-south-pod-1-b', {
      operation: 'sessions.find',
      params: { user: 'zoe' },
    });
    const pod = byPod(found).get('eu-west/pod-2')!;
    expect((pod.result!.desktops as { id: string }[]).map((d) => d.id)).toEqual([desktop]);
    // Without a key a state-changing operation is refused before anything is sent.
    await expect(f.aggregate(ENTRY, { ...req, idempotencyKey: '' })).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
  });

  it('refuses bad requests with INVALID_ARGUMENT naming the field, and keeps serving', async () => {
    const cases: [Partial<AggregateRequest>, RegExp][] = [
      [{ operation: 'nope' }, /operation: unknown operation "nope"/],
      [{ operation: 'sessions.find', params: {} }, /params\.user/],
      [{ operation: 'echo', timeout: msToDuration(0) }, /timeout: must be positive/],
      [{ operation: 'echo', scope: { sites: ['mars'], pods: [] } }, /scope\.sites\[0\]: unknown site "mars"/],
      [{ operation: 'echo', scope: { sites: [], pods: ['pod-9'] } }, /scope\.pods\[0\]/],
      [{ operation: 'echo', correlationId: 'bad id with spaces' }, /correlation_id/],
    ];
    for (const [req, msg] of cases) {
      await expect(f.aggregate(ENTRY, req)).rejects.toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
        details: expect.stringMatching(msg),
      });
    }
    expect((await f.aggregate(ENTRY, { operation: 'echo' })).summary?.podsOk).toBe(5);
  });

  it('serves health SERVING, lists both services by reflection, and takes a call through buf curl', async () => {
    const buf = path.join(ROOT, 'node_modules/.bin/buf');
    const addr = `http://${f.brokers.get(ENTRY)!.address}`;
    const list = await run(buf, [
      'curl',
      '--protocol',
      'grpc',
      '--http2-prior-knowledge',
      addr,
      '--list-services',
    ]);
    expect(list.stdout).toContain('wanas.v1.AggregationService');
    expect(list.stdout).toContain('wanas.v1.FederationService');
    const call = await run(buf, [
      'curl',
      '--protocol',
      'grpc',
      '--http2-prior-knowledge',
      '-d',
      JSON.stringify({ operation: 'pods.capacity', timeout: '3s' }),
      `${addr}/wanas.v1.AggregationService/Aggregate`,
    ]);
    expect(call.stderr).toBe('');
    const body = JSON.parse(call.stdout) as {
      summary: { podsAsked: number; podsOk: number };
      reduced: { total: number };
    };
    expect(body.summary).toMatchObject({ podsAsked: 5, podsOk: 5 });
    expect(body.reduced.total).toBe(5 * 24);
    const health = await run(buf, [
      'curl',
      '--protocol',
      'grpc',
      '--http2-prior-knowledge',
      '-d',
      '{"service":""}',
      `${addr}/grpc.health.v1.Health/Check`,
    ]);
    expect(JSON.parse(health.stdout)).toEqual({ status: 'SERVING' });
  });

  it("names the health service's file as clients expect: grpc/health/v1/health.proto", async () => {
    const def = protoLoader.loadSync(
      path.join(ROOT, 'node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto'),
      { keepCase: true },
    );
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
    };
    const client = new pkg.grpc.reflection.v1.ServerReflection(
      f.brokers.get(ENTRY)!.address,
      grpc.credentials.createInsecure(),
    );
    try {
      const names = await new Promise<string[]>((resolve, reject) => {
        const call = client.ServerReflectionInfo!() as grpc.ClientDuplexStream<unknown, ReflectionAnswer>;
        call.on('data', (r: ReflectionAnswer) => {
          const files = r.file_descriptor_response?.file_descriptor_proto ?? [];
          resolve(files.map((b) => fromBinary(FileDescriptorProtoSchema, b).name));
          call.end();
        });
        call.on('error', reject);
        call.write({ file_containing_symbol: 'grpc.health.v1.Health' });
      });
      expect(names).toContain('grpc/health/v1/health.proto');
    } finally {
      client.close();
    }
  });

  it('streams pod results as they arrive: fast pods first, the summary last', async () => {
    const c = f.client(ENTRY);
    const call = c.streamAggregate({
      request: AggregateRequest.fromPartial({
        operation: 'echo',
        params: { sleepMs: 700, sleepPod: 'ap-south/pod-1' },
        // Room for a busy machine (CI runs the chaos test beside this one): the 700 ms pod must not meet
        // the 1 s default attempt timeout; this test is about order, not timeouts.
        attemptTimeout: msToDuration(2500),
        timeout: msToDuration(5000),
      }),
    });
    const t0 = Date.now();
    const events: { at: number; e: StreamAggregateResponse }[] = [];
    await new Promise<void>((resolve, reject) => {
      call.on('data', (e: StreamAggregateResponse) => events.push({ at: Date.now() - t0, e }));
      call.on('end', resolve);
      call.on('error', reject);
    });
    const pods = events.filter((x) => x.e.event?.$case === 'pod');
    expect(pods).toHaveLength(5);
    // Every pod answered OK (named, so a failure says which pod and why).
    expect(
      pods.map(
        (x) =>
          x.e.event?.$case === 'pod' && `${x.e.event.pod.site}/${x.e.event.pod.pod}:${x.e.event.pod.code}`,
      ),
    ).toEqual(pods.map((x) => x.e.event?.$case === 'pod' && `${x.e.event.pod.site}/${x.e.event.pod.pod}:0`));
    const last = pods[pods.length - 1]!;
    expect(last.e.event?.$case === 'pod' && last.e.event.pod.site).toBe('ap-south');
    const fast = pods.slice(0, 4);
    expect(Math.max(...fast.map((x) => x.at))).toBeLessThan(last.at - 300);
    const done = events[events.length - 1]!.e.event;
    expect(done?.$case).toBe('done');
    if (done?.$case === 'done') expect(done.done.summary?.podsOk).toBe(5);
  });

  it('gives a partial answer within the overall timeout when a pod is slow', async () => {
    const t0 = Date.now();
    const res = await f.aggregate(ENTRY, {
      operation: 'echo',
      params: { sleepMs: 5000, sleepPod: 'eu-west/pod-2' },
      timeout: msToDuration(1000),
    });
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeLessThan(1000 + 500);
    const slow = byPod(res).get('eu-west/pod-2')!;
    expect(slow.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(res.summary?.podsOk).toBe(4);
  });

  it('keeps answers complete while the site representative dies mid-run', async () => {
    const first = await f.aggregate(ENTRY, { operation: 'echo' });
    const rep = byPod(first).get('eu-west/pod-1')!.attempts[0]!.brokerId;
    expect(f.brokers.get(rep)!.site).toBe('eu-west');
    const runs: Promise<AggregateResponse>[] = [];
    for (let i = 0; i < 20; i++) {
      runs.push(f.aggregate(ENTRY, { operation: 'echo', timeout: msToDuration(3000) }));
      if (i === 5) await f.signal(rep, 'SIGKILL');
      else await new Promise((r) => setTimeout(r, 15));
    }
    const answers = await Promise.all(runs);
    const repPod = f.brokers.get(rep)!.pod;
    for (const a of answers) {
      // Every pod with a live twin still answers.
      const missing = a.pods.filter(
        (p) =>
          p.code !== 0 &&
          !(p.site === 'eu-west' && p.pod === repPod && SPEC['eu-west'][repPod as 'pod-1'] === 1),
      );
      expect(missing).toEqual([]);
    }
    await f.startBroker(rep);
    await settle();
  });

  it('reports a pod with no live broker as UNAVAILABLE while every other pod answers', async () => {
    await f.signal('us-east-pod-2-a', 'SIGKILL');
    await f.signal('eu-west-pod-2-a', 'SIGKILL');
    try {
      const res = await f.aggregate(ENTRY, { operation: 'echo', timeout: msToDuration(3000) });
      const m = byPod(res);
      expect(m.get('us-east/pod-2')!.code).toBe(grpc.status.UNAVAILABLE);
      expect(m.get('eu-west/pod-2')!.code).toBe(grpc.status.UNAVAILABLE);
      expect(m.get('eu-west/pod-2')!.message).toContain('eu-west-pod-2-a');
      expect(res.summary).toMatchObject({
        podsAsked: 5,
        podsOk: 3,
        podsFailed: 2,
        failedByCode: { UNAVAILABLE: 2 },
      });
    } finally {
      await f.startBroker('us-east-pod-2-a');
      await f.startBroker('eu-west-pod-2-a');
      await settle();
    }
  });

  it('reports an unreachable (frozen) site and delivers the rest within the timeout', async () => {
    const ap = ['ap-south-pod-1-a', 'ap-south-pod-1-b'];
    for (const id of ap) await f.signal(id, 'SIGSTOP');
    try {
      // Every answer comes within the timeout and reports the frozen site's pod; a second answer is taken
      // when another pod failed too (seen rarely in CI: a peer restarted by the previous test still
      // reconnecting), and then every other pod must answer.
      let others: string[] = [];
      for (let round = 0; round < 2; round++) {
        const t0 = Date.now();
        const res = await f.aggregate(ENTRY, {
          operation: 'echo',
          timeout: msToDuration(2500),
          attemptTimeout: msToDuration(400),
        });
        expect(Date.now() - t0).toBeLessThan(2500 + 500);
        const ap1 = byPod(res).get('ap-south/pod-1')!;
        if (ap1.code === grpc.status.DEADLINE_EXCEEDED) {
          // Not yet known down: both brokers were tried and waited for.
          expect(ap1.attempts.map((a) => a.brokerId).sort()).toEqual(ap);
        } else {
          // Found silent while tried (keepalive dropped the connections), or known down by then and
          // reported at once: UNAVAILABLE, naming both.
          expect(ap1.code).toBe(grpc.status.UNAVAILABLE);
          expect(ap1.message).toMatch(/ap-south-pod-1-[ab]\b.*ap-south-pod-1-[ab]\b/);
        }
        others = res.pods
          .filter((p) => p.site !== 'ap-south' && p.code !== 0)
          .map((p) => `${p.site}/${p.pod}: ${p.code} ${p.message}`);
        if (others.length === 0) break;
      }
      expect(others).toEqual([]);
    } finally {
      for (const id of ap) await f.signal(id, 'SIGCONT');
    }
  });
});
