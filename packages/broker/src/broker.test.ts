import * as grpc from '@grpc/grpc-js';
import { AggregateRequest, AggregationServiceClient, type AggregateResponse } from '@wanas/proto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { freePorts } from '@wanas/devfed';
import { startBroker, type BrokerHandle } from './broker';
import { createLogger } from './telemetry/logger';

const logger = createLogger({ silent: true });

describe('a broker in process (real servers on 127.0.0.1)', () => {
  let dir: string;
  let brokers: BrokerHandle[] = [];
  let clients: grpc.Client[] = [];
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-broker-'));
  });
  afterEach(async () => {
    for (const c of clients) c.close();
    await Promise.all(brokers.map((b) => b.close(100)));
    brokers = [];
    clients = [];
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const aggregate = (address: string, req: Partial<AggregateRequest>) => {
    const c = new AggregationServiceClient(address, grpc.credentials.createInsecure());
    clients.push(c);
    return new Promise<AggregateResponse>((resolve, reject) =>
      c.aggregate(
        AggregateRequest.fromPartial(req),
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
  };

  it('serves Prometheus metrics and JSON status over HTTP', async () => {
    const [p1] = await freePorts(1);
    const file = path.join(dir, 'topology.yaml');
    fs.writeFileSync(
      file,
      YAML.stringify({
        federation: 'm',
        sites: [{ name: 's', pods: [{ name: 'p', brokers: [{ id: 'a', address: `127.0.0.1:${p1}` }] }] }],
      }),
    );
    const b = await startBroker({
      id: 'a',
      topologyFile: file,
      logger,
      metricsAddress: '127.0.0.1:0',
      watch: false,
    });
    brokers.push(b);
    await aggregate(`127.0.0.1:${p1}`, { operation: 'echo' });
    await aggregate(`127.0.0.1:${p1}`, { operation: 'nope' }).catch(() => undefined);
    const metrics = await (await fetch(`http://127.0.0.1:${b.metricsPort}/metrics`)).text();
    expect(metrics).toMatch(
      /grpc_server_handled_total\{[^}]*grpc_method="Aggregate"[^}]*grpc_code="OK"[^}]*\} 1/,
    );
    expect(metrics).toMatch(/grpc_server_handled_total\{[^}]*grpc_code="INVALID_ARGUMENT"[^}]*\} 1/);
    expect(metrics).toContain('grpc_server_handling_seconds_bucket');
    expect(metrics).toContain('wanas_open_channels');
    const status = (await (await fetch(`http://127.0.0.1:${b.metricsPort}/status`)).json()) as {
      broker: { id: string };
    };
    expect(status.broker.id).toBe('a');
    expect((await fetch(`http://127.0.0.1:${b.metricsPort}/nope`)).status).toBe(404);
  });

  it('applies a changed topology file without a restart: a new pod is asked from then on', async () => {
    const [pa, pb, pc] = await freePorts(3);
    const file = path.join(dir, 'topology.yaml');
    const doc = (pods: { name: string; brokers: { id: string; address: string }[] }[]) =>
      YAML.stringify({
        federation: 'r',
        settings: { dataDir: path.join(dir, 'data') },
        sites: [{ name: 's', pods }],
      });
    const podA = { name: 'p1', brokers: [{ id: 'a', address: `127.0.0.1:${pa}` }] };
    const podB = { name: 'p2', brokers: [{ id: 'b', address: `127.0.0.1:${pb}` }] };
    fs.writeFileSync(file, doc([podA, podB]));
    const a = await startBroker({ id: 'a', topologyFile: file, logger });
    brokers.push(a, await startBroker({ id: 'b', topologyFile: file, logger, watch: false }));
    expect((await aggregate(`127.0.0.1:${pa}`, { operation: 'echo' })).summary?.podsAsked).toBe(2);

    // A bad edit is refused and the old topology stays in force.
    fs.writeFileSync(file, 'federation: r\nsites: []\n');
    await new Promise((r) => setTimeout(r, 500));
    expect(a.topology().sites[0]!.pods).toHaveLength(2);

    const podC = { name: 'p3', brokers: [{ id: 'c', address: `127.0.0.1:${pc}` }] };
    fs.writeFileSync(file, doc([podA, podB, podC]));
    brokers.push(await startBroker({ id: 'c', topologyFile: file, logger, watch: false }));
    for (let i = 0; i < 50 && a.topology().sites[0]!.pods.length < 3; i++)
      await new Promise((r) => setTimeout(r, 100));
    const res = await aggregate(`127.0.0.1:${pa}`, { operation: 'echo' });
    expect(res.pods.map((p) => p.pod)).toEqual(['p1', 'p2', 'p3']);
    expect(res.summary?.podsOk).toBe(3);
  });

  it('serves configured operations; a reload moves a backend but refuses a changed operations section', async () => {
    const servers = await Promise.all(
      ['one', 'two'].map(
        (name) =>
          new Promise<http.Server>((resolve) => {
            const s = http.createServer((_q, res) => res.end(JSON.stringify({ from: name })));
            s.listen(0, '127.0.0.1', () => resolve(s));
          }),
      ),
    );
    const url = (s: http.Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    const [p1] = await freePorts(1);
    const file = path.join(dir, 'topology.yaml');
    const doc = (backend: string, operation: object) =>
      YAML.stringify({
        federation: 'u',
        settings: { dataDir: path.join(dir, 'data') },
        services: { catalog: { http: {} } },
        operations: [operation],
        sites: [
          {
            name: 's',
            pods: [
              {
                name: 'p',
                services: { catalog: backend },
                brokers: [{ id: 'a', address: `127.0.0.1:${p1}` }],
              },
            ],
          },
        ],
      });
    const search = { name: 'catalog.search', service: 'catalog', method: 'POST /v1/search' };
    fs.writeFileSync(file, doc(url(servers[0]!), search));
    const b = await startBroker({ id: 'a', topologyFile: file, logger, watch: false });
    brokers.push(b);
    const ask = async () =>
      (await aggregate(`127.0.0.1:${p1}`, { operation: 'catalog.search' })).pods[0]!.result;
    expect(await ask()).toEqual({ from: 'one' });

    fs.writeFileSync(file, doc(url(servers[1]!), search));
    expect(b.reload()).toBe(true);
    expect(await ask()).toEqual({ from: 'two' });

    fs.writeFileSync(file, doc(url(servers[1]!), { ...search, method: 'POST /v2/search' }));
    expect(b.reload()).toBe(false);
    expect(await ask()).toEqual({ from: 'two' });
    for (const s of servers) s.close();
  });

  it('refuses to start when an operations module does not load, naming it and the cause', async () => {
    const [p1] = await freePorts(1);
    const file = path.join(dir, 'topology.yaml');
    fs.writeFileSync(path.join(dir, 'bad.js'), 'throw new Error("cannot read config.json")');
    fs.writeFileSync(
      file,
      YAML.stringify({
        federation: 'u',
        settings: { dataDir: path.join(dir, 'data') },
        operations: [{ module: './bad.js' }],
        sites: [{ name: 's', pods: [{ name: 'p', brokers: [{ id: 'a', address: `127.0.0.1:${p1}` }] }] }],
      }),
    );
    await expect(startBroker({ id: 'a', topologyFile: file, logger, watch: false })).rejects.toThrow(
      /operations module \.\/bad\.js: failed to load: Error: cannot read config\.json/,
    );
  });
});
