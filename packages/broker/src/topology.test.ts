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
