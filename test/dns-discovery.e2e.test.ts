/**
 * DNS discovery end to end: real broker processes whose pods are given as dns:///NAME:PORT, resolved
 * against a real DNS server on 127.0.0.1 that the test changes to scale pods up, down and to zero.
 * Replicas of a pod share one port on their own loopback addresses (127.0.0.2, 127.0.0.3, ...), as
 * Kubernetes pods share a port on their own IPs.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceClient,
  AggregateRequest,
  AggregationServiceClient,
  type AggregateResponse,
  type GetStatusResponse,
} from '@wanas/proto';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { TestDnsServer } from './support/dns-server';
import { createTlsDir, freePorts, spawnBroker, stopProcess, waitServing } from '@wanas/devfed';

jest.setTimeout(90_000);

/** Polls `check` every 100 ms until it returns a value, at most `ms`. */
async function eventually<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`${what} not within ${ms} ms${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.each([
  ['plaintext', false],
  ["mTLS (replicas share their pod's certificate)", true],
])('pods found by DNS, %s (a real DNS server on 127.0.0.1)', (_label, mtls) => {
  let creds = grpc.credentials.createInsecure();
  const dns = new TestDnsServer();
  const procs = new Map<string, ChildProcess>();
  const logs = new Map<string, string[]>();
  let dir: string;
  let file: string;
  let entry: string;
  let p2Port: number;
  let s2Port: number;
  let client: AggregationServiceClient;
  let admin: AdminServiceClient;

  async function startBroker(name: string, args: string[], address: string, tlsName?: string): Promise<void> {
    const p = spawnBroker({ topologyFile: file, args });
    procs.set(name, p);
    const lines: string[] = [];
    logs.set(name, lines);
    p.stderr!.on('data', (b: Buffer) => lines.push(...b.toString().split('\n').filter(Boolean)));
    await waitServing(address, p, {
      timeoutMs: 30_000,
      credentials: creds,
      channelOptions: tlsName
        ? { 'grpc.ssl_target_name_override': tlsName, 'grpc.default_authority': tlsName }
        : {},
      describe: () => `${name}: ${lines.slice(-5).join('\n')}`,
    });
  }

  const stopBroker = (name: string) => stopProcess(procs.get(name));

  const aggregate = () =>
    new Promise<AggregateResponse>((resolve, reject) =>
      client.aggregate(
        AggregateRequest.fromPartial({ operation: 'echo', params: { hello: 'dns' } }),
        new grpc.Metadata(),
        { deadline: Date.now() + 10_000 },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
  const status = () =>
    new Promise<GetStatusResponse>((resolve, reject) =>
      admin.getStatus({}, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, r) =>
        e ? reject(e) : resolve(r),
      ),
    );
  const podBrokers = (s: GetStatusResponse, site: string, pod: string) =>
    s.sites.find((x) => x.name === site)?.pods.find((p) => p.name === pod)?.brokerIds ?? [];
  const pod = (r: AggregateResponse, site: string, name: string) =>
    r.pods.find((p) => p.site === site && p.pod === name)!;

  beforeAll(async () => {
    await dns.start();
    [p2Port, s2Port] = (await freePorts(2)) as [number, number];
    const [entryPort] = await freePorts(1);
    entry = `127.0.0.1:${entryPort}`;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-dns-'));
    file = path.join(dir, 'topology.yaml');
    let security: Record<string, unknown> | undefined;
    if (mtls) {
      // One certificate per static broker (its id) and per DNS pod (its identity <site>-<pod>).
      const files = await createTlsDir(path.join(dir, 'certs'), ['s1-p1-a', 's1-p2', 's2-p1']);
      security = { mode: 'mtls', caFile: files.ca, certFile: files.brokerCert, keyFile: files.brokerKey };
      const read = (f: string) => fs.readFileSync(f);
      creds = grpc.credentials.createSsl(read(files.ca), read(files.clientKey), read(files.clientCert));
    }
    fs.writeFileSync(
      file,
      YAML.stringify({
        federation: 'dns',
        settings: { dataDir: 'data', dnsRefreshMs: 200, dnsServers: [dns.address] },
        ...(security ? { security } : {}),
        sites: [
          {
            name: 's1',
            pods: [
              { name: 'p1', brokers: [{ id: 's1-p1-a', address: entry }] },
              { name: 'p2', brokers: `dns:///p2.s1.wanas.test:${p2Port}` },
            ],
          },
          { name: 's2', pods: [{ name: 'p1', brokers: `dns:///p1.s2.wanas.test:${s2Port}` }] },
        ],
      }),
    );
    dns.set('p2.s1.wanas.test', ['127.0.0.2']);
    dns.set('p1.s2.wanas.test', ['127.0.0.4']);
    await Promise.all([
      startBroker('entry', ['--id', 's1-p1-a'], entry),
      startBroker(
        'p2-r1',
        ['--pod', 's1/p2', '--id', 'p2-r1', '--listen', `127.0.0.2:${p2Port}`],
        `127.0.0.2:${p2Port}`,
        's1-p2',
      ),
      startBroker(
        's2-r1',
        ['--pod', 's2/p1', '--id', 's2-r1', '--listen', `127.0.0.4:${s2Port}`],
        `127.0.0.4:${s2Port}`,
        's2-p1',
      ),
    ]);
    client = new AggregationServiceClient(entry, creds);
    admin = new AdminServiceClient(entry, creds);
  });

  afterAll(async () => {
    client?.close();
    admin?.close();
    await Promise.all([...procs.keys()].map(stopBroker));
    await dns.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers every pod, with DNS pods reached at the addresses their name resolves to', async () => {
    const r = await aggregate();
    if (r.pods.some((p) => p.code)) console.log(JSON.stringify(r.pods.map((p) => [p.code, p.message])));
    expect(r.pods.map((p) => [p.site, p.pod, p.code])).toEqual([
      ['s1', 'p1', 0],
      ['s1', 'p2', 0],
      ['s2', 'p1', 0],
    ]);
    expect(pod(r, 's1', 'p2').answeredBy).toBe('p2-r1');
    expect(pod(r, 's2', 'p1').answeredBy).toBe('s2-r1');
    expect(podBrokers(await status(), 's1', 'p2')).toEqual([`s1-p2@127.0.0.2:${p2Port}`]);
    if (mtls) {
      // The links really are TLS: a plaintext client gets nowhere.
      const plain = new AggregationServiceClient(entry, grpc.credentials.createInsecure());
      await expect(
        new Promise((resolve, reject) =>
          plain.aggregate(
            AggregateRequest.fromPartial({ operation: 'echo' }),
            new grpc.Metadata(),
            { deadline: Date.now() + 2000 },
            (e, r) => (e ? reject(e) : resolve(r)),
          ),
        ),
      ).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
      plain.close();
    }
  });

  it('follows a scale-up and a replaced replica without a restart', async () => {
    await startBroker(
      'p2-r2',
      ['--pod', 's1/p2', '--id', 'p2-r2', '--listen', `127.0.0.3:${p2Port}`],
      `127.0.0.3:${p2Port}`,
      's1-p2',
    );
    dns.set('p2.s1.wanas.test', ['127.0.0.2', '127.0.0.3']);
    await eventually('entry sees two replicas of s1/p2', 10_000, async () =>
      podBrokers(await status(), 's1', 'p2').length === 2 ? true : undefined,
    );
    // The old replica goes away (rolling update): out of DNS first, then stopped.
    dns.set('p2.s1.wanas.test', ['127.0.0.3']);
    await eventually('entry drops the old replica', 10_000, async () =>
      podBrokers(await status(), 's1', 'p2').join() === `s1-p2@127.0.0.3:${p2Port}` ? true : undefined,
    );
    await stopBroker('p2-r1');
    const r = await aggregate();
    expect(pod(r, 's1', 'p2')).toMatchObject({ code: 0, answeredBy: 'p2-r2' });
    expect(r.pods.every((p) => p.code === 0)).toBe(true);
  });

  it('keeps the brokers it found through a DNS outage', async () => {
    dns.mode = 'servfail';
    const seen = dns.queries;
    await eventually('a few lookups during the outage', 10_000, async () =>
      dns.queries > seen + 6 ? true : undefined,
    );
    const r = await aggregate();
    expect(r.pods.map((p) => p.code)).toEqual([0, 0, 0]);
    expect(podBrokers(await status(), 's1', 'p2')).toEqual([`s1-p2@127.0.0.3:${p2Port}`]);
    dns.mode = 'normal';
  });

  it('reports a pod scaled to zero as UNAVAILABLE, naming it, while the others answer', async () => {
    dns.remove('p1.s2.wanas.test');
    await eventually('entry sees s2/p1 empty', 10_000, async () =>
      podBrokers(await status(), 's2', 'p1').length === 0 ? true : undefined,
    );
    const r = await aggregate();
    expect(pod(r, 's1', 'p2').code).toBe(0);
    expect(pod(r, 's2', 'p1')).toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(pod(r, 's2', 'p1').message).toMatch(/s2/);
  });
});
