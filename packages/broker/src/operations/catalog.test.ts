import { status } from '@grpc/grpc-js';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { SqliteInventory } from '../store/sqlite-inventory';
import { parseTopology, type Topology } from '@wanas/topology';
import { listOperations, operationsCatalog } from './catalog';
import type { BackendMetrics } from '../telemetry/metrics';
import type { BrokerOperationContext } from './types';

const MODULE_CJS = `
module.exports = { operations: [{
  name: 'plug.hello', description: 'hello', idempotent: true,
  params: { safeParse: (v) => ({ success: true, data: v }) },
  execute: (p, ctx) => ({ hello: ctx.pod }),
}] };`;
const MODULE_ESM = `
export const hi = { name: 'plug.esm', description: 'esm', idempotent: true,
  params: { safeParse: (v) => ({ success: true, data: v }) }, execute: () => ({ esm: true }) };`;

describe('operationsCatalog: built-in, configured and plug-in operations in one registry', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-catalog-'));
    fs.writeFileSync(path.join(dir, 'hello.js'), MODULE_CJS);
    fs.writeFileSync(path.join(dir, 'esm.mjs'), MODULE_ESM);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const metrics = { called: [] as number[], shed: 0, inFlight: [] as number[] };
  const backendMetrics: BackendMetrics = {
    called: (_s, code) => metrics.called.push(code),
    inFlight: (_s, now) => metrics.inFlight.push(now),
    shed: () => metrics.shed++,
  };
  const topologyWith = (extra: object, address = 'http://127.0.0.1:1'): Topology =>
    parseTopology(
      {
        federation: 'f',
        ...extra,
        sites: [
          {
            name: 's1',
            pods: [
              {
                name: 'p1',
                ...('services' in extra && { services: { catalog: address } }),
                brokers: [{ id: 'a', address: '127.0.0.1:7001' }],
              },
            ],
          },
        ],
      },
      path.join(dir, 'topology.yaml'),
    );
  const catalogOf = (t: Topology) =>
    operationsCatalog({ topology: () => t, site: 's1', pod: 'p1', brokerId: 'a', metrics: backendMetrics });

  it('loads a CommonJS module by path relative to the topology file, beside the built-ins', async () => {
    const c = await catalogOf(topologyWith({ operations: [{ module: './hello.js' }] }));
    const ops = listOperations(c.registry).operations;
    expect(ops.map((o) => o.name)).toEqual([
      'desktops.provision',
      'echo',
      'plug.hello',
      'pods.capacity',
      'sessions.find',
      'sessions.list',
    ]);
    expect(ops.find((o) => o.name === 'plug.hello')).toMatchObject({ kind: 'module', module: './hello.js' });
    expect(ops.find((o) => o.name === 'sessions.find')!.paramsSchema).toMatchObject({
      properties: { user: { type: 'string' } },
    });
    // What may be answered from the results cache says for how long; the rest says nothing.
    expect(ops.find((o) => o.name === 'pods.capacity')!.cacheMaxAge).toEqual({ seconds: 2, nanos: 0 });
    expect(ops.find((o) => o.name === 'sessions.find')!.cacheMaxAge).toBeUndefined();
    c.close();
  });

  it('loads an ES module (.mjs) through import() (checked in a plain Node process: Jest has no import())', async () => {
    const modules = path.resolve(__dirname, '../../dist/operations/modules.js');
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        [
          '-e',
          `require(${JSON.stringify(modules)}).loadModule('./esm.mjs', ${JSON.stringify(dir)}).then((ops) => console.log(JSON.stringify(ops.map((o) => [o.name, o.info]))))`,
        ],
        (e, stdout, stderr) => (e ? reject(new Error(stderr)) : resolve(stdout)),
      ),
    );
    expect(JSON.parse(out)).toEqual([['plug.esm', { kind: 'module', module: './esm.mjs' }]]);
  });

  it('refuses a module that fails, exports nothing, or exports a broken operation, naming it and why', async () => {
    fs.writeFileSync(path.join(dir, 'boom.js'), 'throw new Error("no config")');
    fs.writeFileSync(path.join(dir, 'empty.js'), 'module.exports = { x: 1 }');
    fs.writeFileSync(
      path.join(dir, 'broken.js'),
      'module.exports = [{ name: "a.b", description: "", idempotent: true }]',
    );
    const cases: [string, RegExp][] = [
      ['./boom.js', /operations module \.\/boom\.js: failed to load: Error: no config/],
      ['./empty.js', /operations module \.\/empty\.js: exports no operation/],
      ['./broken.js', /operations module \.\/broken\.js: a\.b: params: must be a zod schema/],
      ['./missing.js', /operations module \.\/missing\.js: not found/],
      ['no-such-package-wanas', /operations module no-such-package-wanas: not found/],
    ];
    for (const [module, message] of cases)
      await expect(catalogOf(topologyWith({ operations: [{ module }] }))).rejects.toThrow(message);
  });

  it('refuses a second operation of the same name, saying where the first came from', async () => {
    fs.writeFileSync(path.join(dir, 'echo.js'), MODULE_CJS.replace('plug.hello', 'echo'));
    await expect(catalogOf(topologyWith({ operations: [{ module: './echo.js' }] }))).rejects.toThrow(
      'operations[0]: operation "echo" is already defined (by a built-in operation)',
    );
  });

  it('refuses a gRPC service whose descriptor set or TLS files cannot be read, naming the field', async () => {
    const grpcOp = [{ name: 'inv.count', service: 'catalog', method: 'a.B/C' }];
    const withGrpc = (grpc: object) => {
      return topologyWith({ services: { catalog: { grpc } }, operations: grpcOp }, '127.0.0.1:1');
    };
    await expect(catalogOf(withGrpc({ descriptorSet: './none.binpb' }))).rejects.toThrow(
      `services.catalog.grpc: cannot read descriptor set ${dir}/none.binpb`,
    );
    await expect(catalogOf(withGrpc({ tls: { caFile: './ca.pem' } }))).rejects.toThrow(
      `services.catalog.grpc: tls.caFile: cannot read ./ca.pem`,
    );
  });

  it('pages a configured listing: the window goes to the backend in the fields it names', async () => {
    const seen: unknown[] = [];
    const ids = ['a', 'b', 'c', 'd', 'e'];
    const server = http.createServer((q, res) => {
      let body = '';
      q.on('data', (c: Buffer) => (body += c.toString()));
      q.on('end', () => {
        const req = JSON.parse(body) as { from: string; max: number };
        seen.push(req);
        const items = ids.filter((id) => id >= req.from).slice(0, req.max || undefined);
        res.end(JSON.stringify({ rows: items.map((id) => ({ id })) }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const t = topologyWith(
      {
        services: { catalog: { http: {} } },
        operations: [
          {
            name: 'catalog.list',
            service: 'catalog',
            method: 'POST /v1/list',
            page: { items: 'rows', key: 'id', after: 'from', limit: 'max' },
          },
        ],
      },
      `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    );
    const c = await catalogOf(t);
    try {
      const op = c.registry.get('catalog.list');
      expect(op.page).toEqual({ items: 'rows', key: 'id' });
      expect(listOperations(c.registry).operations.find((o) => o.name === 'catalog.list')).toMatchObject({
        pageItems: 'rows',
        pageKey: 'id',
      });
      const ctx = { deadline: Date.now() + 5000, signal: new AbortController().signal, headers: {} };
      const page = await op.execute({ tenant: 't1' }, {
        ...ctx,
        page: { after: 'b', limit: 2 },
      } as unknown as BrokerOperationContext);
      expect(page).toEqual({ rows: [{ id: 'b' }, { id: 'c' }] });
      expect(seen).toEqual([{ tenant: 't1', from: 'b', max: 2 }]);
    } finally {
      c.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it('refuses a listing that writes or reduces, naming the field', () => {
    const op = {
      name: 'catalog.list',
      service: 'catalog',
      method: 'POST /v1/list',
      page: { items: 'rows', key: 'id' },
    };
    const bad = (o: object) => () =>
      topologyWith({ services: { catalog: { http: {} } }, operations: [{ ...op, ...o }] });
    expect(bad({ idempotent: false })).toThrow(
      'operations[0].page: a listing reads: only an idempotent operation pages',
    );
    expect(bad({ reduce: { count: true } })).toThrow(
      "operations[0].reduce: a listing's reduction is its merged page",
    );
    expect(bad({ page: { items: 'a.b', key: 'id' } })).toThrow(
      'operations[0].page.items: must be a field name',
    );
  });

  it('sheds calls past a service maxInFlight at once with RESOURCE_EXHAUSTED, and counts them', async () => {
    const pending: http.ServerResponse[] = [];
    const server = http.createServer((_q, res) => pending.push(res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const t = topologyWith({
      services: { catalog: { http: {}, maxInFlight: 1 } },
      operations: [
        { name: 'catalog.search', service: 'catalog', method: 'POST /v1/search' },
        { name: 'catalog.order', service: 'catalog', method: 'POST /v1/order', idempotent: false },
      ],
    });
    t.sites[0]!.pods[0]!.services.catalog = url;
    const c = await catalogOf(t);
    const op = c.registry.get('catalog.search');
    const store = new SqliteInventory(path.join(dir, 'pod.sqlite'), 's1', 'p1');
    const ctx = {
      site: 's1',
      pod: 'p1',
      brokerId: 'a',
      correlationId: 'c',
      headers: {},
      idempotencyKey: '',
      deadline: Date.now() + 5000,
      signal: new AbortController().signal,
      traceparent: undefined,
      logger: console,
      store,
      once: (f: () => Promise<Record<string, unknown>>) => {
        keysClaimed++;
        return f();
      },
    } as unknown as BrokerOperationContext;
    let keysClaimed = 0;
    const first = Promise.resolve(op.execute({ q: 'a' }, ctx));
    await new Promise<void>((r) => server.once('request', () => r()));
    const second = await Promise.resolve(op.execute({ q: 'b' }, ctx)).catch((e: unknown) => e);
    expect((second as { code: number }).code).toBe(status.RESOURCE_EXHAUSTED);
    expect((second as { details: string }).details).toContain('services.catalog.maxInFlight');
    expect(metrics.shed).toBe(1);
    // A write shed at the limit never reaches the ledger: its key is not claimed, so a resend runs.
    const write = c.registry.get('catalog.order');
    const shedWrite = await Promise.resolve(write.execute({ n: 1 }, { ...ctx, idempotencyKey: 'w1' })).catch(
      (e: unknown) => e,
    );
    expect((shedWrite as { code: number }).code).toBe(status.RESOURCE_EXHAUSTED);
    expect(keysClaimed).toBe(0);
    pending[0]!.end('{"items":[]}');
    expect(await first).toEqual({ items: [] });
    expect(metrics.inFlight.slice(-2)).toEqual([1, 0]);
    store.close();
    c.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
});
