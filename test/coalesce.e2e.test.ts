/**
 * Identical reads once (real processes, emulated WAN): identical Aggregates in flight at once share one
 * execution at the entry, identical SiteRequests at a representative, identical LocalRequests at a pod;
 * each caller keeps its own correlation id, cancel and deadline; identities are never mixed and writes
 * never shared; the results cache serves whole answers within the client's max_staleness, never partial
 * ones, and a topology reload empties it. A plug-in module counts every run of its operations per pod.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceClient,
  AggregateRequest,
  type StreamAggregateResponse,
  AggregationServiceClient,
  ExplainRequest,
  durationToMs,
  msToDuration,
  type AggregateResponse,
  type ExplainResponse,
} from '@wanas/proto';
import { DevFederation } from '@wanas/devfed';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { until } from './support/until';

const PROBE = `
const { defineOperation, z, OperationError, Code } = require('@wanas/operations');
const runs = new Map();
const aborted = new Map();
const bump = (m, k) => m.set(k, (m.get(k) ?? 0) + 1);
const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(() => resolve(true), ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(false); }, { once: true });
});
const work = async (p, ctx) => {
  bump(runs, p.tag);
  const ms = p.slowPod === undefined || p.slowPod === ctx.site + '/' + ctx.pod ? (p.ms ?? 0) : 0;
  if (!(await sleep(ms, ctx.signal))) {
    bump(aborted, p.tag);
    throw new OperationError(Code.CANCELLED, 'stopped');
  }
  if (p.failPod === ctx.site + '/' + ctx.pod) throw new OperationError(Code.UNAVAILABLE, 'told to fail');
  return { tag: p.tag, runs: runs.get(p.tag) };
};
const params = z.strictObject({
  tag: z.string(), ms: z.number().optional(), failPod: z.string().optional(), slowPod: z.string().optional(),
});
module.exports = [
  defineOperation({ name: 'probe.read', description: 'counts its runs', idempotent: true, params, execute: work }),
  defineOperation({ name: 'probe.cached', description: 'counts its runs; cacheable', idempotent: true, params,
    execute: work, cache: { maxAge: '1m' } }),
  defineOperation({ name: 'probe.write', description: 'a write that counts its runs', idempotent: false, params,
    execute: (p, ctx) => ctx.once(() => work(p, ctx)) }),
  defineOperation({ name: 'probe.list', description: 'a listing that counts its runs; cacheable',
    idempotent: true, params: z.strictObject({ tag: z.string() }), page: { items: 'items', key: 'id' },
    cache: { maxAge: '1m' },
    execute: (p, ctx) => {
      runs.set(p.tag, (runs.get(p.tag) ?? 0) + 1);
      const after = ctx.page?.after ?? '';
      const items = Array.from({ length: 6 }, (_, i) => ({ id: ctx.site + '-' + ctx.pod + '-' + i }));
      return { items: items.filter((x) => x.id > after).slice(0, ctx.page?.limit || undefined) };
    } }),
  defineOperation({ name: 'probe.runs', description: 'runs so far', idempotent: true,
    params: z.strictObject({ tag: z.string(), at: z.number() }),
    execute: (p) => ({ runs: runs.get(p.tag) ?? 0, aborted: aborted.get(p.tag) ?? 0 }) }),
];`;

const A = 's1-p1-a';
const B = 's1-p2-a';

interface Call {
  done: Promise<AggregateResponse>;
  cancel(): void;
}

describe('identical reads once (real processes, emulated WAN)', () => {
  let dir: string;
  let f: DevFederation;
  const clients = new Map<string, AggregationServiceClient>();
  let queries = 0;

  /** An Aggregate to `entry` as `client` (x-wanas-client), with a gRPC deadline of `deadlineMs`. */
  const send = (entry: string, req: Partial<AggregateRequest>, client = '', deadlineMs = 20_000): Call => {
    let c = clients.get(entry);
    if (!c)
      clients.set(entry, (c = new AggregationServiceClient(f.broker(entry).address, f.clientCredentials)));
    const md = new grpc.Metadata();
    if (client) md.set('x-wanas-client', client);
    let call!: grpc.ClientUnaryCall;
    const done = new Promise<AggregateResponse>((resolve, reject) => {
      call = c.aggregate(
        AggregateRequest.fromPartial(req),
        md,
        { deadline: Date.now() + deadlineMs },
        (e, r) => (e ? reject(e) : resolve(r!)),
      );
    });
    return { done, cancel: () => call.cancel() };
  };
  const read = (tag: string, more: Partial<AggregateRequest> = {}, op = 'probe.read', ms = 500) => ({
    operation: op,
    params: { tag, ms },
    attemptTimeout: msToDuration(ms + 2000), // a LAN attempt outlasts the operation's own time
    ...more,
  });
  /** Runs of `tag` per pod so far (a read of its own each time, so never shared). */
  const runsOf = async (tag: string): Promise<Record<string, { runs: number; aborted: number }>> => {
    const res = await send(A, { operation: 'probe.runs', params: { tag, at: queries++ } }).done;
    return Object.fromEntries(
      res.pods.map((p) => [`${p.site}/${p.pod}`, p.result as { runs: number; aborted: number }]),
    );
  };
  const runCounts = async (tag: string) =>
    Object.fromEntries(Object.entries(await runsOf(tag)).map(([k, v]) => [k, v.runs]));
  const okPods = (r: AggregateResponse) => r.pods.every((p) => p.code === 0);

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-coalesce-'));
    fs.writeFileSync(path.join(dir, 'probe.js'), PROBE);
    f = await DevFederation.start({
      spec: { s1: { p1: 1, p2: 1, p3: 1 }, s2: { p1: 1 }, s3: { p1: 1 } },
      wanLatencyMs: 10,
      operations: [{ module: path.join(dir, 'probe.js') }],
    });
    await until('every pod answers', async () => okPods(await send(A, { operation: 'echo' }).done), 30_000);
  }, 120_000);
  afterAll(async () => {
    for (const c of clients.values()) c.close();
    await f?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('at the entry: 20 identical reads run once in every pod, each answered under its own correlation id', async () => {
    const calls = Array.from({ length: 20 }, (_, i) =>
      send(A, read('entry', { correlationId: `entry-${i}` })),
    );
    const answers = await Promise.all(calls.map((c) => c.done));
    answers.forEach((r, i) => {
      expect(r.correlationId).toBe(`entry-${i}`);
      expect(okPods(r)).toBe(true);
      expect(r.pods.map((p) => (p.result as { runs: number }).runs)).toEqual([1, 1, 1, 1, 1]);
    });
    const ran = answers.filter((r) => !r.sharedFrom);
    expect(ran).toHaveLength(1);
    for (const r of answers) if (r.sharedFrom) expect(r.sharedFrom).toBe(ran[0]!.correlationId);
    expect(Object.values(await runCounts('entry'))).toEqual([1, 1, 1, 1, 1]);
  });

  it('at the representative and the pod: two entries’ identical reads run once where they meet', async () => {
    const [a, b] = await Promise.all([
      send(A, read('hops', {}, 'probe.read', 800)).done,
      send(B, read('hops', {}, 'probe.read', 800)).done,
    ]);
    expect([okPods(a!), okPods(b!), a!.sharedFrom, b!.sharedFrom]).toEqual([true, true, '', '']);
    // s2 and s3 (one SiteRequest each from both entries) and s1/p3 (a LocalRequest from both) ran once;
    // s1/p1 and s1/p2 each ran for their own entry and for the other's LocalRequest.
    expect(await runCounts('hops')).toEqual({ 's1/p1': 2, 's1/p2': 2, 's1/p3': 1, 's2/p1': 1, 's3/p1': 1 });
  });

  it('never shares an answer between two clients, at any hop', async () => {
    const [alice, bob] = await Promise.all([
      send(A, read('who'), 'alice').done,
      send(A, read('who'), 'bob').done,
    ]);
    expect([alice!.sharedFrom, bob!.sharedFrom]).toEqual(['', '']);
    expect(Object.values(await runCounts('who'))).toEqual([2, 2, 2, 2, 2]);
  });

  it('never shares a write', async () => {
    const write = (key: string) => ({ ...read('w', {}, 'probe.write'), idempotencyKey: key });
    const answers = await Promise.all([send(A, write('w-1')).done, send(A, write('w-2')).done]);
    expect(answers.map((r) => [okPods(r), r.sharedFrom])).toEqual([
      [true, ''],
      [true, ''],
    ]);
    expect(Object.values(await runCounts('w'))).toEqual([2, 2, 2, 2, 2]);
  });

  it('a caller that cancels leaves the others’ execution running; the last caller’s cancel stops it', async () => {
    const leaving = send(A, read('stay', {}, 'probe.read', 1500));
    const staying = send(A, read('stay', {}, 'probe.read', 1500));
    await new Promise((r) => setTimeout(r, 300));
    leaving.cancel();
    await expect(leaving.done).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    const kept = await staying.done;
    expect(okPods(kept)).toBe(true);
    expect(Object.values(await runsOf('stay')).map((x) => [x.runs, x.aborted])).toEqual(
      Array(5).fill([1, 0]),
    );

    const both = [
      send(A, read('gone', {}, 'probe.read', 4000)),
      send(A, read('gone', {}, 'probe.read', 4000)),
    ];
    await new Promise((r) => setTimeout(r, 300));
    for (const c of both) c.cancel();
    for (const c of both) await expect(c.done).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    // Every pod's operation saw its signal aborted, long before its 4 s were over.
    await until(
      'every pod stopped the shared execution',
      async () => Object.values(await runsOf('gone')).every((x) => x.aborted === 1),
      3000,
    );
  });

  it('a joiner with a shorter budget is answered DEADLINE_EXCEEDED then, without cutting the first short', async () => {
    const first = send(A, read('deadline', { timeout: msToDuration(8000) }, 'probe.read', 1200));
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    // Its own budget (timeout 300 ms) ends it, not the gRPC deadline (20 s): the broker answers it.
    const joiner = send(A, read('deadline', { timeout: msToDuration(300) }, 'probe.read', 1200));
    await expect(joiner.done).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
    expect(Date.now() - t0).toBeLessThan(1000);
    const whole = await first.done;
    expect(okPods(whole)).toBe(true);
    expect(Object.values(await runCounts('deadline'))).toEqual([1, 1, 1, 1, 1]);
  });

  it('a pod frozen mid-execution: each caller of the shared execution gets the other pods and that one failed, on time', async () => {
    const budget = { timeout: msToDuration(2500) };
    const both = [
      send(A, read('frozen', budget, 'probe.read', 800)),
      send(A, read('frozen', budget, 'probe.read', 800)),
    ];
    await new Promise((r) => setTimeout(r, 200));
    await f.signal('s3-p1-a', 'SIGSTOP');
    let answers: AggregateResponse[];
    try {
      answers = await Promise.all(both.map((c) => c.done));
    } finally {
      await f.signal('s3-p1-a', 'SIGCONT');
    }
    expect(answers.filter((r) => r.sharedFrom)).toHaveLength(1);
    for (const r of answers) {
      const codes = Object.fromEntries(r.pods.map((p) => [`${p.site}/${p.pod}`, p.code]));
      expect(codes['s3/p1']).not.toBe(0);
      expect(Object.entries(codes).filter(([k, c]) => k !== 's3/p1' && c !== 0)).toEqual([]);
      expect(durationToMs(r.latency)).toBeLessThan(2500);
    }
    expect(answers[1]!.pods).toEqual(answers[0]!.pods);
    // The other pods ran it once; the frozen one answers again once thawed.
    await until('s3/p1 answers again', async () => okPods(await send(A, { operation: 'echo' }).done), 20_000);
    const runs = await runCounts('frozen');
    expect(
      Object.entries(runs)
        .filter(([k]) => k !== 's3/p1')
        .map(([, n]) => n),
    ).toEqual([1, 1, 1, 1]);
  });

  it('Explain says a request would join the identical one in flight', async () => {
    const admin = new AdminServiceClient(f.broker(A).address, f.clientCredentials);
    try {
      const slow = send(A, read('explain', { correlationId: 'explained-run' }, 'probe.read', 1500));
      await new Promise((r) => setTimeout(r, 200));
      const plan = await new Promise<ExplainResponse>((resolve, reject) =>
        admin.explain(
          ExplainRequest.fromPartial({ request: read('explain', {}, 'probe.read', 1500) }),
          (e, r) => (e ? reject(e) : resolve(r!)),
        ),
      );
      expect([plan.answerFrom, plan.joins]).toEqual(['join', 'explained-run']);
      await slow.done;
    } finally {
      admin.close();
    }
  });

  it('a streamed caller that joins late gets the pods already final, then the rest, from one execution', async () => {
    const client = new AggregationServiceClient(f.broker(A).address, f.clientCredentials);
    const stream = (correlationId: string) =>
      new Promise<StreamAggregateResponse[]>((resolve, reject) => {
        const events: StreamAggregateResponse[] = [];
        const call = client.streamAggregate({
          request: AggregateRequest.fromPartial({
            ...read('stream', { correlationId }, 'probe.read', 1000),
            params: { tag: 'stream', ms: 1000, slowPod: 's3/p1' },
          }),
        });
        call.on('data', (e: StreamAggregateResponse) => events.push(e));
        call.on('end', () => resolve(events));
        call.on('error', reject);
      });
    try {
      const first = stream('stream-first');
      await new Promise((r) => setTimeout(r, 400)); // every pod but s3/p1 has answered by now
      const late = await stream('stream-late');
      const podsOf = (events: StreamAggregateResponse[]) =>
        events.flatMap((e) => (e.event?.$case === 'pod' ? [`${e.event.pod.site}/${e.event.pod.pod}`] : []));
      expect(podsOf(late).sort()).toEqual(['s1/p1', 's1/p2', 's1/p3', 's2/p1', 's3/p1']);
      expect(podsOf(late).at(-1)).toBe('s3/p1'); // the slow pod came last, live
      const done = late.at(-1)?.event;
      expect(done?.$case).toBe('done');
      if (done?.$case === 'done')
        expect([done.done.correlationId, done.done.sharedFrom]).toEqual(['stream-late', 'stream-first']);
      expect(podsOf(await first).sort()).toEqual(podsOf(late).sort());
      expect(Object.values(await runCounts('stream'))).toEqual([1, 1, 1, 1, 1]);
    } finally {
      client.close();
    }
  });

  it('shares a page of a listing between identical page requests in flight', async () => {
    const page = { operation: 'sessions.list', pageSize: 5 };
    const [a, b] = await Promise.all([send(A, page).done, send(A, page).done]);
    expect([a!.sharedFrom, b!.sharedFrom].filter(Boolean)).toHaveLength(1);
    expect(b!.reduced).toEqual(a!.reduced);
    expect(a!.nextPageToken).not.toBe('');
    // The next page (a token of its own) is another request.
    const next = await send(A, { ...page, pageToken: a!.nextPageToken }).done;
    expect(next.sharedFrom).toBe('');
    expect(next.reduced).not.toEqual(a!.reduced);
  });

  it('the results cache keeps each page of a listing by its token', async () => {
    const page = {
      operation: 'probe.list',
      params: { tag: 'lp' },
      pageSize: 8,
      maxStaleness: msToDuration(30_000),
    };
    const first = await send(A, page).done;
    expect([first.cached, first.nextPageToken !== '']).toEqual([false, true]);
    const again = await send(A, page).done;
    expect([again.cached, again.sharedFrom]).toEqual([true, first.correlationId]);
    expect(again.reduced).toEqual(first.reduced);
    expect(again.nextPageToken).toBe(first.nextPageToken);
    // The next page is its own entry: fresh the first time, from the cache the second.
    const next = await send(A, { ...page, pageToken: first.nextPageToken }).done;
    expect(next.cached).toBe(false);
    expect(next.reduced).not.toEqual(first.reduced);
    const nextAgain = await send(A, { ...page, pageToken: first.nextPageToken }).done;
    expect([nextAgain.cached, nextAgain.nextPageToken]).toEqual([true, next.nextPageToken]);
    // Every pod ran once per page it was asked for, never for a page answered from the cache.
    expect(Object.values(await runCounts('lp')).every((n) => n >= 1 && n <= 2)).toBe(true);
  });

  it('the results cache: a whole answer again within max_staleness, a partial one never, none after a reload', async () => {
    const stale = { maxStaleness: msToDuration(30_000) };
    const first = await send(A, read('c', stale, 'probe.cached', 0)).done;
    expect([first.cached, okPods(first)]).toEqual([false, true]);
    const again = await send(A, read('c', { ...stale, correlationId: 'from-cache' }, 'probe.cached', 0)).done;
    expect([again.cached, again.correlationId, again.sharedFrom]).toEqual([
      true,
      'from-cache',
      first.correlationId,
    ]);
    expect(again.age).toBeDefined();
    expect(again.pods).toEqual(first.pods);
    // A client that asks for a fresh answer (no max_staleness) gets one.
    const fresh = await send(A, read('c', {}, 'probe.cached', 0)).done;
    expect(fresh.cached).toBe(false);
    expect(Object.values(await runCounts('c'))).toEqual([2, 2, 2, 2, 2]);

    // A partial answer is never kept.
    const partial = read('p', stale, 'probe.cached', 0);
    (partial.params as Record<string, unknown>).failPod = 's2/p1';
    expect((await send(A, partial).done).summary?.podsFailed).toBe(1);
    expect((await send(A, partial).done).cached).toBe(false);
    expect((await runCounts('p'))['s1/p1']).toBe(2);

    // A topology reload empties it.
    const text = fs.readFileSync(f.topologyFile, 'utf8');
    fs.writeFileSync(f.topologyFile, text.replace(/^settings:\n/m, 'settings:\n  defaultTimeoutMs: 5001\n'));
    await until(
      'the reload emptied the cache',
      async () => !(await send(A, read('c', stale, 'probe.cached', 0)).done).cached,
      10_000,
    );
  });
});
