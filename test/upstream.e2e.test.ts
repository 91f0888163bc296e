/**
 * Operations from configuration and a plug-in module, on real processes: a gRPC backend in Python
 * (examples/inventory/backend.py) and a JSON-over-HTTP backend in Node (examples/inventory/catalog.js) in
 * every pod of three sites, behind real brokers and the WAN emulator. Clients: the Python client,
 * `buf curl`, `wanas ops` and grpc-js. What a backend saw (metadata, outcome) is read from the events
 * file each backend writes.
 */
import * as grpc from '@grpc/grpc-js';
import { AggregateRequest, AggregationServiceClient, Mode, msToDuration, type PodResult } from '@wanas/proto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Federation, ROOT, WANAS_BIN } from './support/federation';
import { run } from './support/run';
import { until } from './support/until';

const PYTHON = '/usr/bin/python3';
const EXAMPLE = path.join(ROOT, 'examples/inventory');
const ENTRY = 's1-p1-a';
const TWIN = 's1-p1-b';

const services = {
  inventory: {
    grpc: { descriptorSet: path.join(EXAMPLE, 'inventory.binpb') },
    dev: `${PYTHON} ${EXAMPLE}/backend.py --port {port} --site {site} --pod {pod} --events inventory-{site}-{pod}.jsonl`,
  },
  catalog: {
    http: {},
    dev: `node ${EXAMPLE}/catalog.js --port {port} --site {site} --pod {pod} --events catalog-{site}-{pod}.jsonl`,
  },
};
const COUNT = 'acme.inventory.v1.Inventory/Count';
const operations = [
  { name: 'inventory.count', service: 'inventory', method: COUNT, reduce: { sum: 'total' } },
  { name: 'inventory.cheapest', service: 'inventory', method: COUNT, reduce: { min: 'minPrice' } },
  { name: 'inventory.dearest', service: 'inventory', method: COUNT, reduce: { max: 'minPrice' } },
  { name: 'inventory.pods', service: 'inventory', method: COUNT, reduce: { count: true } },
  {
    name: 'inventory.list',
    service: 'inventory',
    method: 'acme.inventory.v1.Inventory/List',
    reduce: { mergeSorted: { field: 'items', by: 'score', order: 'desc', limit: 6 } },
  },
  {
    name: 'inventory.reserve',
    service: 'inventory',
    method: 'acme.inventory.v1.Inventory/Reserve',
    idempotent: false,
    nextPodOn: ['RESOURCE_EXHAUSTED'],
  },
  {
    name: 'catalog.search',
    service: 'catalog',
    method: 'POST /v1/search',
    reduce: { mergeSorted: { field: 'items', by: 'score', order: 'desc', limit: 5 } },
  },
  {
    name: 'catalog.all',
    service: 'catalog',
    method: 'POST /v1/search',
    reduce: { concat: { field: 'items', limit: 7 } },
  },
  {
    name: 'catalog.products',
    service: 'catalog',
    method: 'POST /v1/products',
    page: { items: 'products', key: 'sku' },
  },
  { module: path.join(EXAMPLE, 'ops/geo.js') },
];

/** One line of a backend's events file. */
interface BackendEvent {
  method: string;
  outcome: string;
  metadata?: Record<string, string>;
  headers?: Record<string, string>;
  key?: string;
  /** gRPC: the seconds left of the call's deadline when the backend got it. */
  timeRemaining?: number;
  /** A listing's window, as the backend got it. */
  after?: string;
  limit?: number;
}

describe('operations from configuration: gRPC and HTTP backends in every pod, and a plug-in module', () => {
  let f: Federation;

  beforeAll(async () => {
    f = await Federation.start(
      { s1: { p1: 2, p2: 1 }, s2: { p1: 1 }, s3: { p1: 1 } },
      { attemptTimeoutMs: 1500 },
      undefined,
      { services, operations },
    );
  }, 120_000);
  afterAll(() => f?.stop());

  /** Every event a pod's backend wrote so far. */
  const events = (service: 'inventory' | 'catalog', site: string, pod: string): BackendEvent[] => {
    const file = path.join(f.dir, `${service}-${site}-${pod}.jsonl`);
    if (!fs.existsSync(file)) return [];
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as BackendEvent);
  };
  const byPod = (pods: PodResult[]) => Object.fromEntries(pods.map((p) => [`${p.site}/${p.pod}`, p]));

  it('answers a gRPC backend federation-wide through the Python client: proto3 JSON, int64 as strings, defaults included', async () => {
    const out = await run(PYTHON, [
      path.join(ROOT, 'examples/clients/python/client.py'),
      '--address',
      f.brokers.get(ENTRY)!.address,
      '--op',
      'inventory.count',
      '--param',
      'sku=widget',
      '--json',
    ]);
    expect(out.stderr).toBe('');
    const res = JSON.parse(out.stdout) as { pods: PodResult[]; reduced: { total: string } };
    expect(res.pods.map((p) => `${p.site}/${p.pod}`).sort()).toEqual(['s1/p1', 's1/p2', 's2/p1', 's3/p1']);
    let total = 0n;
    for (const p of res.pods) {
      expect(p.code ?? 0).toBe(0);
      expect(typeof p.result!.total).toBe('string');
      expect(p.result).toHaveProperty('warehouses');
      total += BigInt(p.result!.total as string);
    }
    expect(res.reduced.total).toBe(total.toString());
    // A field at its default is in the result: an empty list of items, not a missing field.
    const none = await f.aggregate(ENTRY, { operation: 'inventory.list', params: { prefix: 'zzz' } });
    for (const p of none.pods) expect(p.result).toEqual({ items: [] });
  });

  it('answers an HTTP backend federation-wide through buf curl, merged best score first', async () => {
    const out = await run(path.join(ROOT, 'node_modules/.bin/buf'), [
      'curl',
      '--protocol',
      'grpc',
      '--http2-prior-knowledge',
      `http://${f.brokers.get(ENTRY)!.address}/wanas.v1.AggregationService/Aggregate`,
      '-d',
      JSON.stringify({ operation: 'catalog.search', params: { q: 'wid', limit: 3 } }),
    ]);
    expect(out.stderr).toBe('');
    const res = JSON.parse(out.stdout) as { pods: PodResult[]; reduced: { items: { score: number }[] } };
    expect(res.pods).toHaveLength(4);
    const all = res.pods.flatMap((p) => (p.result!.items as { score: number }[]).map((i) => i.score));
    const expected = all.sort((a, b) => b - a).slice(0, 5);
    expect(res.reduced.items.map((i) => i.score)).toEqual(expected);
  });

  it('applies every declared reducer to the pods that answered', async () => {
    const ask = (operation: string, params: object) => f.aggregate(ENTRY, { operation, params });
    const count = await ask('inventory.count', { sku: 'gizmo' });
    const prices = count.pods.map((p) => p.result!.minPrice as number);
    expect((await ask('inventory.cheapest', { sku: 'gizmo' })).reduced).toEqual({
      minPrice: Math.min(...prices),
    });
    expect((await ask('inventory.dearest', { sku: 'gizmo' })).reduced).toEqual({
      minPrice: Math.max(...prices),
    });
    expect((await ask('inventory.pods', { sku: 'gizmo' })).reduced).toEqual({ count: 4 });
    const all = await ask('catalog.all', { q: 'w' });
    const joined = all.pods.flatMap((p) => p.result!.items as unknown[]);
    expect(joined.length).toBeGreaterThan(7);
    expect(all.reduced!.items).toHaveLength(7);
    const list = await ask('inventory.list', {});
    const scores = (list.reduced!.items as { score: number }[]).map((i) => i.score);
    expect(scores).toHaveLength(6);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    // A pod that failed adds nothing: the sum of the pods that found the SKU.
    const missing = await ask('inventory.count', { sku: 'nosuch' });
    expect(missing.pods.every((p) => p.code === grpc.status.NOT_FOUND)).toBe(true);
    expect(missing.reduced).toEqual({ total: 0 });
  });

  it('refuses bad params at the entry, naming the field, before any WAN request', async () => {
    const correlationId = 'upstream-bad-params';
    const err = await f
      .aggregate(ENTRY, { correlationId, operation: 'inventory.count', params: { sku: 'widget', skew: 1 } })
      .then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/inventory\.count: params: .*"skew" is unknown/);
    const wrongType = await f.aggregate(ENTRY, { operation: 'inventory.count', params: { sku: 12 } }).then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    expect(wrongType?.details).toMatch(/CountRequest\.sku/);
    for (const id of ['s2-p1-a', 's3-p1-a'])
      expect(f.brokers.get(id)!.logs.some((l) => l.correlationId === correlationId)).toBe(false);
  });

  it('lists every operation with its kind, method, reducer and params schema (wanas ops)', async () => {
    const out = await run('node', [WANAS_BIN, 'ops', '--address', f.brokers.get(ENTRY)!.address, '--json']);
    expect(out.status).toBe(0);
    const ops = (JSON.parse(out.stdout) as { operations: Record<string, unknown>[] }).operations;
    const count = ops.find((o) => o.name === 'inventory.count')!;
    expect(count).toMatchObject({ kind: 'grpc', service: 'inventory', method: COUNT, idempotent: true });
    expect(count.reduce).toEqual({ sum: 'total' });
    expect((count.paramsSchema as { properties: object }).properties).toHaveProperty('sku');
    const reserve = ops.find((o) => o.name === 'inventory.reserve')!;
    expect(reserve.idempotent ?? false).toBe(false); // proto3 JSON leaves a false out
    expect(reserve.nextPodOn).toEqual(['RESOURCE_EXHAUSTED']);
    expect(ops.find((o) => o.name === 'catalog.search')).toMatchObject({
      kind: 'http',
      method: 'POST /v1/search',
    });
    expect(ops.find((o) => o.name === 'geo.where')).toMatchObject({ kind: 'module' });
    expect(ops.find((o) => o.name === 'sessions.find')).toMatchObject({ kind: 'builtin' });
    expect(ops.find((o) => o.name === 'catalog.products')).toMatchObject({
      pageItems: 'products',
      pageKey: 'sku',
    });
  });

  it("pages an HTTP backend's listing across every pod in sku order, each product once", async () => {
    const listed: { sku: string; site: string; pod: string }[] = [];
    let token = '';
    for (let page = 0; page < 30; page++) {
      const r = await f.aggregate(TWIN, { operation: 'catalog.products', pageSize: 15, pageToken: token });
      const products = r.reduced!.products as { sku: string; site: string; pod: string }[];
      expect(products.length).toBeLessThanOrEqual(15);
      listed.push(...products);
      token = r.nextPageToken;
      if (!token) break;
    }
    expect(token).toBe('');
    // 40 products in each of the 4 pods, once each, in sku order.
    expect(listed).toHaveLength(160);
    expect(new Set(listed.map((p) => `${p.site}/${p.pod}/${p.sku}`)).size).toBe(160);
    expect(listed.map((p) => p.sku)).toEqual(listed.map((p) => p.sku).sort());
    // The backend got the window in the fields the topology names: a page's share, from the cursor on.
    const asked = events('catalog', 's2', 'p1').filter(
      (e) => e.method === 'POST /v1/products' && e.outcome === 'ok',
    );
    expect(asked[0]).toMatchObject({ after: '', limit: expect.any(Number) });
    expect(asked.some((e) => (e as { after?: string }).after !== '')).toBe(true);
  });

  it('passes the correlation id, forwarded headers and the deadline to the backend', async () => {
    const correlationId = 'upstream-propagation';
    await f.aggregate(ENTRY, {
      correlationId,
      operation: 'inventory.count',
      params: { sku: 'widget' },
      headers: { 'x-team': 'platform' },
      timeout: msToDuration(4000),
    });
    const seen = events('inventory', 's2', 'p1').filter(
      (e) => e.metadata?.['x-correlation-id'] === correlationId,
    );
    expect(seen.length).toBeGreaterThan(0);
    expect(seen[0]!.metadata!['x-team']).toBe('platform');
    expect(seen[0]!.metadata!['idempotency-key']).toBeUndefined();
    // The pod attempt's deadline arrived as grpc-timeout: within the 4 s the caller gave.
    expect(seen[0]!.timeRemaining).toBeGreaterThan(0);
    expect(seen[0]!.timeRemaining).toBeLessThan(4);
    await f.aggregate(ENTRY, {
      correlationId: `${correlationId}-http`,
      operation: 'catalog.search',
      params: { q: 'gad' },
      headers: { 'x-team': 'platform' },
    });
    const got = events('catalog', 's3', 'p1').find(
      (e) => e.headers?.['x-correlation-id'] === `${correlationId}-http`,
    );
    expect(got?.headers?.['x-team']).toBe('platform');
    expect(got?.headers?.['content-type']).toBe('application/json');
  });

  it("answers a backend error as that pod's code, without trying the pod's twin broker", async () => {
    const res = await f.aggregate(ENTRY, {
      operation: 'inventory.reserve',
      params: { sku: 'widget', quantity: 1_000_000 },
      idempotencyKey: 'upstream-too-many',
      scope: { sites: [], pods: ['s1/p1'] },
    });
    const [pod] = res.pods;
    expect(pod!.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(pod!.message).toMatch(/only \d+ widget left in s1\/p1/);
    expect(pod!.attempts).toHaveLength(1);
  });

  it('runs a write once per key and pod: resent through the twin broker, it does not reach the backend again', async () => {
    const key = 'upstream-reserve-1';
    const ask = (id: string) =>
      f.aggregate(id, {
        operation: 'inventory.reserve',
        params: { sku: 'gadget', quantity: 2 },
        idempotencyKey: key,
      });
    const first = byPod((await ask(ENTRY)).pods);
    const again = byPod((await ask(TWIN)).pods);
    for (const pod of ['s1/p1', 's1/p2', 's2/p1', 's3/p1']) {
      expect(first[pod]!.code).toBe(0);
      expect(again[pod]!.result).toEqual(first[pod]!.result);
    }
    for (const [site, pod] of [
      ['s1', 'p1'],
      ['s2', 'p1'],
    ] as const) {
      const calls = events('inventory', site, pod).filter(
        (e) => e.method === 'Reserve' && e.outcome === 'received' && e.metadata?.['idempotency-key'] === key,
      );
      expect(calls).toHaveLength(1);
    }
    // The same key with other params is refused, not run.
    const other = await f.aggregate(TWIN, {
      operation: 'inventory.reserve',
      params: { sku: 'gadget', quantity: 3 },
      idempotencyKey: key,
      scope: { sites: [], pods: ['s1/p1'] },
    });
    expect(other.pods[0]!.code).toBe(grpc.status.FAILED_PRECONDITION);
  });

  it('places a write in the first pod that can take it (MODE_FIRST, nextPodOn), asking the next pods only on those codes', async () => {
    const place = (quantity: number, idempotencyKey: string) =>
      f.aggregate(ENTRY, {
        operation: 'inventory.reserve',
        params: { sku: 'sprocket', quantity },
        idempotencyKey,
        mode: Mode.MODE_FIRST,
        preferSites: ['s2'],
      });
    const one = await place(1, 'upstream-first-1');
    expect(one.pods.map((p) => [`${p.site}/${p.pod}`, p.code])).toEqual([['s2/p1', 0]]);
    const none = await place(1_000_000, 'upstream-first-2');
    expect(none.pods).toHaveLength(4);
    expect(none.pods.every((p) => p.code === grpc.status.RESOURCE_EXHAUSTED)).toBe(true);
    expect(none.pods[0]!.site).toBe('s2');
  });

  it('runs a plug-in module written against @wanas/operations', async () => {
    // The module knows the example's sites, not this federation's s1-s3: its OperationError is each pod's answer.
    const res = await f.aggregate(ENTRY, { operation: 'geo.where', params: { lat: 0, lon: 0 } });
    for (const p of res.pods) {
      expect(p.code).toBe(grpc.status.NOT_FOUND);
      expect(p.message).toBe(`no coordinates for site ${p.site}`);
    }
    expect(res.reduced).toEqual({ nearest: null, km: null });
    const bad = await f.aggregate(ENTRY, { operation: 'geo.where', params: { lat: 91, lon: 0 } }).then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    expect(bad?.details).toMatch(/params\.lat/);
  });

  it("answers a killed backend as that pod's UNAVAILABLE naming service and address; the others answer", async () => {
    const b = f.backends.backend('inventory', 's2', 'p1');
    await f.backends.stop(b, 0);
    const res = byPod(
      (await f.aggregate(ENTRY, { operation: 'inventory.count', params: { sku: 'widget' } })).pods,
    );
    expect(res['s2/p1']!.code).toBe(grpc.status.UNAVAILABLE);
    expect(res['s2/p1']!.message).toContain(`service inventory at 127.0.0.1:${b.port}`);
    for (const pod of ['s1/p1', 's1/p2', 's3/p1']) expect(res[pod]!.code).toBe(0);
    await f.backends.restart(b);
    await until('s2/p1 answers again', async () => {
      const r = await f.aggregate(ENTRY, { operation: 'inventory.count', params: { sku: 'widget' } });
      return byPod(r.pods)['s2/p1']!.code === 0;
    });
  });

  it("answers a backend slower than the deadline as that pod's DEADLINE_EXCEEDED while the others answer", async () => {
    const b = f.backends.backend('inventory', 's3', 'p1');
    await f.backends.restart(b, ['--delay-ms', '8000']);
    const t0 = Date.now();
    const res = await f.aggregate(ENTRY, {
      operation: 'inventory.count',
      params: { sku: 'widget' },
      timeout: msToDuration(2000),
    });
    expect(Date.now() - t0).toBeLessThan(8000);
    const pods = byPod(res.pods);
    expect(pods['s3/p1']!.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    for (const pod of ['s1/p1', 's1/p2', 's2/p1']) expect(pods[pod]!.code).toBe(0);
  });

  it("passes a caller's cancel on to the backend", async () => {
    // s3/p1's backend is still slow (8 s): the call is cancelled while the backend works on it.
    const correlationId = 'upstream-cancel';
    const client = new AggregationServiceClient(f.brokers.get(ENTRY)!.address, f.credentials);
    await new Promise<void>((resolve) => {
      const call = client.aggregate(
        AggregateRequest.fromPartial({
          correlationId,
          operation: 'inventory.count',
          params: { sku: 'widget' },
          timeout: msToDuration(20_000),
          attemptTimeout: msToDuration(15_000),
        }),
        new grpc.Metadata(),
        { deadline: Date.now() + 25_000 },
        () => resolve(),
      );
      void until('s3/p1 backend received the call', async () =>
        events('inventory', 's3', 'p1').some(
          (e) => e.outcome === 'received' && e.metadata?.['x-correlation-id'] === correlationId,
        ),
      ).then(() => call.cancel());
    });
    client.close();
    await until('s3/p1 backend saw the cancel', async () =>
      events('inventory', 's3', 'p1').some(
        (e) => e.outcome === 'cancelled' && e.metadata?.['x-correlation-id'] === correlationId,
      ),
    );
  });
});
