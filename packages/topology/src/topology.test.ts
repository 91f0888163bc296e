import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TopologyError, loadTopology, parseTopology } from './topology';

const good = {
  federation: 'demo',
  sites: [
    {
      name: 'us-east',
      pods: [
        {
          name: 'pod-1',
          brokers: [
            { id: 'a', address: '127.0.0.1:7101', wanAddress: '127.0.0.1:8101' },
            { id: 'b', address: '127.0.0.1:7102' },
          ],
        },
      ],
    },
    { name: 'eu-west', pods: [{ name: 'pod-1', brokers: [{ id: 'c', address: '127.0.0.1:7201' }] }] },
  ],
};

function issues(doc: unknown): string[] {
  try {
    parseTopology(doc);
  } catch (e) {
    expect(e).toBeInstanceOf(TopologyError);
    return (e as TopologyError).issues;
  }
  throw new Error('expected a TopologyError');
}

describe('topology', () => {
  it('parses a valid file, fills defaults and derives each broker site, pod and WAN address', () => {
    const t = parseTopology(good);
    expect(t.brokers.get('a')).toMatchObject({ site: 'us-east', pod: 'pod-1', wanAddress: '127.0.0.1:8101' });
    expect(t.brokers.get('b')!.wanAddress).toBe('127.0.0.1:7102');
    expect(t.settings).toMatchObject({ attemptTimeoutMs: 1000, defaultTimeoutMs: 5000, warmPerTarget: 1 });
  });

  it('names the path of every bad field', () => {
    const bad = structuredClone(good) as Record<string, unknown> & typeof good;
    bad.sites[0]!.pods[0]!.brokers[1]!.address = 'nowhere';
    bad.sites[1]!.pods[0]!.brokers[0]!.id = 'a';
    (bad.sites[1]! as Record<string, unknown>).colour = 'blue';
    const found = issues(bad);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^sites\[0\]\.pods\[0\]\.brokers\[1\]\.address: must be host:port/),
        expect.stringMatching(/^sites\[1\]\.pods\[0\]\.brokers\[0\]\.id: duplicate broker id "a"/),
        expect.stringMatching(/^sites\[1\]: Unrecognized key: "colour"/),
      ]),
    );
  });

  it('refuses shared addresses, empty pods, bad names and settings', () => {
    expect(issues({ federation: 'x', sites: [{ name: 'S', pods: [] }] })).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^sites\[0\]\.name: site name must be lower-case/),
        expect.stringMatching(/^sites\[0\]\.pods: a site needs at least one pod/),
      ]),
    );
    const shared = structuredClone(good);
    shared.sites[1]!.pods[0]!.brokers[0]!.address = '127.0.0.1:7101';
    expect(issues(shared)).toEqual([
      expect.stringMatching(/address 127.0.0.1:7101 is already used by broker "a"/),
    ]);
    expect(issues({ ...good, settings: { attemptTimeoutMs: 0 } })).toEqual([
      expect.stringMatching(/^settings\.attemptTimeoutMs:/),
    ]);
  });

  it('names what is wrong in the tracing section', () => {
    const issuesOf = (tracing: unknown) => issues({ ...good, tracing });
    expect(issuesOf({ endpoint: 'ftp://collector:21' })).toEqual([
      expect.stringMatching(/^tracing\.endpoint: must be an http:\/\/ or https:\/\/ URL/),
    ]);
    expect(issuesOf({ protocol: 'grpc' })).toEqual([expect.stringMatching(/^tracing\.protocol: /)]);
    expect(issuesOf({ sampler: 'sometimes' })).toEqual([expect.stringMatching(/^tracing\.sampler: /)]);
    expect(issuesOf({ sampler: 'always_on', samplerRatio: 0.5 })).toEqual([
      'tracing.samplerRatio: only applies to the traceidratio samplers, not "always_on"',
    ]);
    expect(issuesOf({ samplerRatio: 2, sampler: 'traceidratio' })).toEqual([
      expect.stringMatching(/^tracing\.samplerRatio: /),
    ]);
    expect(issuesOf({ headers: { authorization: 'x' } })).toEqual([expect.stringMatching(/headers/)]);
  });

  it('reports unreadable files and YAML syntax errors', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-topo-'));
    expect(() => loadTopology(path.join(dir, 'missing.yaml'))).toThrow(/cannot read topology file/);
    fs.writeFileSync(path.join(dir, 'bad.yaml'), 'federation: [unclosed\n');
    expect(() => loadTopology(path.join(dir, 'bad.yaml'))).toThrow(/is not valid YAML/);
    fs.rmSync(dir, { recursive: true });
  });
});

describe('topology: pods found by DNS', () => {
  const withPod = (pod: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    ...good,
    ...extra,
    sites: [...good.sites, { name: 'k8s', pods: [{ name: 'pod-1', ...pod }] }],
  });

  it('takes brokers: "dns:///NAME:PORT" with per-replica listen, health and metrics addresses', () => {
    const t = parseTopology(
      withPod({
        brokers: 'dns:///wanas-k8s-pod-1.wanas.svc.cluster.local:7000',
        healthAddress: '0.0.0.0:7001',
      }),
    );
    expect(t.sites[2]!.pods[0]!.dns).toEqual({
      host: 'wanas-k8s-pod-1.wanas.svc.cluster.local',
      port: 7000,
      listen: '0.0.0.0:7000',
      healthAddress: '0.0.0.0:7001',
      metricsAddress: undefined,
    });
    expect(t.sites[2]!.pods[0]!.brokers).toEqual([]);
    expect(t.settings.dnsRefreshMs).toBe(5000);
  });

  it('names what is wrong with a DNS pod', () => {
    expect(issues(withPod({ brokers: 'dns://wanas:7000' }))).toEqual([
      expect.stringMatching(/^sites\[2\]\.pods\[0\]\.brokers: .*dns:\/\/\/NAME:PORT/),
    ]);
    expect(issues(withPod({ brokers: 'dns:///wanas:70000' })).join()).toMatch(/port must be 1-65535/);
    expect(
      issues({
        ...good,
        sites: [{ ...good.sites[0], pods: [{ ...good.sites[0]!.pods[0], listen: '0.0.0.0:1' }] }],
      }),
    ).toEqual([
      expect.stringMatching(/^sites\[0\]\.pods\[0\]\.listen: only for a pod whose brokers come from DNS/),
    ]);
    expect(issues(withPod({ brokers: 'dns:///x:1' }, { settings: { dnsServers: ['nope'] } })).join()).toMatch(
      /settings\.dnsServers\[0\]: must be host:port/,
    );
  });

  it('refuses a DNS pod whose identity <site>-<pod> is also a broker id', () => {
    const doc = structuredClone(withPod({ brokers: 'dns:///x:7000' }));
    (doc.sites[0] as (typeof good.sites)[0]).pods[0]!.brokers[0]!.id = 'k8s-pod-1';
    expect(issues(doc).join()).toMatch(/identity "k8s-pod-1" of this DNS pod is also a broker id/);
  });
});

describe('topology: services and operations', () => {
  const withOps = (services: object, operations: unknown[], podServices?: object) => ({
    federation: 'f',
    services,
    operations,
    sites: [
      {
        name: 's1',
        pods: [{ name: 'p1', services: podServices, brokers: [{ id: 'a', address: '127.0.0.1:7001' }] }],
      },
    ],
  });
  const inv = { grpc: {} };
  const count = { name: 'inventory.count', service: 'inventory', method: 'acme.v1.Inventory/Count' };

  it('accepts gRPC and HTTP services, configured operations and modules, filling defaults', () => {
    const t = parseTopology(
      withOps(
        { inventory: inv, catalog: { http: {} } },
        [
          { ...count, reduce: { sum: 'total' } },
          { name: 'catalog.search', service: 'catalog', method: 'POST /v1/search', idempotent: false },
          { module: './ops.js' },
        ],
        { inventory: 'dns:///inventory:9000', catalog: 'https://catalog.local' },
      ),
    );
    expect(t.services.inventory!.maxInFlight).toBe(64);
    expect(t.operations[0]).toMatchObject({ idempotent: true, nextPodOn: [] });
    expect(t.sites[0]!.pods[0]!.services).toEqual({
      inventory: 'dns:///inventory:9000',
      catalog: 'https://catalog.local',
    });
  });

  it('names every bad field of the services and operations sections', () => {
    const problems = issues(
      withOps({ inventory: inv, both: { grpc: {}, http: {} } }, [
        { ...count, reduce: { sum: 'total', count: true } },
        { name: 'inventory.avg', service: 'inventory', method: 'a.B/C', reduce: { avg: 'x' } },
        { name: 'Bad Name', service: 'inventory', method: 'a.B/C' },
        { name: 'inventory.next', service: 'inventory', method: 'a.B/C', nextPodOn: ['FULL'] },
        { module: '' },
      ]),
    );
    const has = (path: string, text: string) =>
      expect(problems.filter((p) => p.startsWith(`${path}: `) && p.includes(text))).toHaveLength(1);
    has('services.both', 'needs exactly one of grpc');
    has(
      'operations[0].reduce',
      'needs exactly one of sum, min, max, count, concat, mergeSorted (got sum, count)',
    );
    has('operations[1].reduce', 'Unrecognized key: "avg"');
    has('operations[2].name', 'dotted lower-case words');
    has('operations[3].nextPodOn[0]', 'RESOURCE_EXHAUSTED');
    has('operations[4].module', 'expected string to have >=1 characters');
  });

  it('then checks what ties the sections together: names, services, method forms, pod addresses', () => {
    const problems = issues(
      withOps(
        { inventory: inv, Bad_Name: { http: {} } },
        [count, { ...count, method: 'Count' }, { name: 'x.y', service: 'nope', method: 'GET /' }],
        { inventory: 'http://x:1', other: '127.0.0.1:1' },
      ),
    );
    expect(problems).toEqual([
      `services.Bad_Name: service name must be lower-case letters, digits and '-', e.g. "inventory"`,
      'operations[1].name: duplicate operation name "inventory.count"',
      'operations[1].method: a gRPC method is "package.Service/Method", e.g. "acme.inventory.v1.Inventory/Count"',
      'operations[2].service: unknown service "nope" (known: inventory, Bad_Name)',
      'sites[0].pods[0].services.inventory: a gRPC backend is "host:port" or "dns:///name:port", e.g. "127.0.0.1:19101"',
      'sites[0].pods[0].services.other: unknown service "other" (not in the services section)',
    ]);
  });

  it('needs each pod to say where the services its operations call are', () => {
    expect(issues(withOps({ inventory: inv }, [count]))).toEqual([
      'sites[0].pods[0].services: pod s1/p1 needs the address of service "inventory" (an operation calls it)',
    ]);
  });
});

describe('topology: admission and clients', () => {
  it('fills admission defaults and takes clients with weights and quotas', () => {
    const t = parseTopology({
      ...good,
      clients: [
        { name: 'token:portal', weight: 3 },
        { name: 'reports', maxInFlight: 5, ratePerSecond: 20 },
      ],
    });
    expect(t.settings.admission).toEqual({
      adaptive: true,
      targetDelayMs: 10,
      latencyTolerance: 2,
      initialPods: 512,
      minPods: 16,
    });
    expect(t.clients).toEqual([
      { name: 'token:portal', weight: 3 },
      { name: 'reports', weight: 1, maxInFlight: 5, ratePerSecond: 20 },
    ]);
  });

  it('names every bad field of admission and clients', () => {
    const found = issues({
      ...good,
      settings: { admission: { targetDelayMs: 0, latencyTolerance: 1, fairness: true } },
      clients: [{ name: 'a b' }, { name: 'x', weight: 0 }, { name: 'x' }, { name: 'y', maxInFlight: 0.5 }],
    });
    const has = (path: string, text: string) =>
      expect(found.some((i) => i.startsWith(`${path}: `) && i.includes(text))).toBe(true);
    has('settings.admission', 'Unrecognized key: "fairness"');
    has('settings.admission.targetDelayMs', '>=1');
    has('settings.admission.latencyTolerance', '>=1.1');
    has('clients[0].name', 'letters, digits');
    has('clients[1].weight', '>=0.01');
    has('clients[3].maxInFlight', 'int');
    // Duplicates are named once the entries themselves are valid.
    expect(issues({ ...good, clients: [{ name: 'x' }, { name: 'x' }] })).toEqual([
      'clients[1].name: duplicate client "x"',
    ]);
  });
});
