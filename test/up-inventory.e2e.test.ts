/**
 * The inventory example under `wanas up --store postgres`, as its README walks through it: `up` starts a
 * private PostgreSQL server and every pod's backends (the services' `dev` commands: Python gRPC, Node HTTP)
 * before the brokers, the operations answer through the CLI, and Ctrl-C stops the backends and the
 * database with the brokers. The example's topology is used as written, but
 * on free ports and with its files named by absolute path (the test's copy lives in a temporary folder).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { ROOT, freePorts } from './support/federation';
import { startUp, wanas, type RunningUp } from './support/up';

const EXAMPLE = path.join(ROOT, 'examples/inventory');

type Doc = {
  services: Record<string, { dev?: string; grpc?: { descriptorSet?: string } }>;
  operations: ({ module: string } | { name: string })[];
  settings: Record<string, unknown>;
  sites: {
    name: string;
    pods: {
      name: string;
      services: Record<string, string>;
      brokers: { address: string; wanAddress: string }[];
    }[];
  }[];
};

/** True when something accepts connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

describe('the inventory example under wanas up', () => {
  let dir: string;
  let up: RunningUp | undefined;
  let entry: string;
  const backendPorts: number[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-up-inventory-'));
    const doc = YAML.parse(fs.readFileSync(path.join(EXAMPLE, 'topology.yaml'), 'utf8')) as Doc;
    const brokers = doc.sites.flatMap((s) => s.pods.flatMap((p) => p.brokers));
    const pods = doc.sites.flatMap((s) => s.pods);
    const ports = await freePorts(brokers.length * 2 + pods.length * 2);
    for (const b of brokers) {
      b.address = `127.0.0.1:${ports.pop()}`;
      b.wanAddress = `127.0.0.1:${ports.pop()}`;
    }
    for (const p of pods) {
      const [grpcPort, httpPort] = [ports.pop()!, ports.pop()!];
      backendPorts.push(grpcPort, httpPort);
      p.services = { inventory: `127.0.0.1:${grpcPort}`, catalog: `http://127.0.0.1:${httpPort}` };
    }
    const inv = doc.services.inventory!;
    inv.grpc!.descriptorSet = path.join(EXAMPLE, 'inventory.binpb');
    inv.dev = inv.dev!.replace('backend.py', path.join(EXAMPLE, 'backend.py'));
    doc.services.catalog!.dev = doc.services.catalog!.dev!.replace(
      'catalog.js',
      path.join(EXAMPLE, 'catalog.js'),
    );
    doc.operations = doc.operations.map((o) =>
      'module' in o ? { module: path.join(EXAMPLE, o.module) } : o,
    );
    doc.settings.dataDir = path.join(dir, 'data');
    const topology = path.join(dir, 'topology.yaml');
    fs.writeFileSync(topology, YAML.stringify(doc));
    entry = brokers[0]!.address;
    up = await startUp(['--topology', topology, '--wan-latency-ms', '5', '--store', 'postgres']);
  }, 120_000);

  afterAll(async () => {
    await up?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('starts every pod backend before the brokers, logging beside them', () => {
    expect(up!.output()).toContain('starting 8 pod backends');
    const logs = fs.readdirSync(path.join(dir, '.wanas', 'logs'));
    expect(logs.filter((f) => f.startsWith('backend-')).sort()).toEqual([
      'backend-catalog-ap-south-pod-1.log',
      'backend-catalog-eu-west-pod-1.log',
      'backend-catalog-us-east-pod-1.log',
      'backend-catalog-us-east-pod-2.log',
      'backend-inventory-ap-south-pod-1.log',
      'backend-inventory-eu-west-pod-1.log',
      'backend-inventory-us-east-pod-1.log',
      'backend-inventory-us-east-pod-2.log',
    ]);
  });

  it('keeps the pods state in the private PostgreSQL server: a placement is answered from it', () => {
    expect(up!.output()).toMatch(/store: a private PostgreSQL at 127\.0\.0\.1:\d+ .*one schema per pod/);
    const args = [
      '--op',
      'desktops.provision',
      '--param',
      'user=ivy',
      '--idempotency-key',
      'ivy-1',
      '--first',
    ];
    const first = wanas('aggregate', '--address', entry, ...args, '--json');
    expect(first.status).toBe(0);
    const again = wanas('aggregate', '--address', entry, ...args, '--json');
    const won = (out: string) =>
      (
        JSON.parse(out) as { pods: { code?: number; result?: { desktop: unknown; replayed: boolean } }[] }
      ).pods.find((p) => !p.code)!.result!;
    expect(won(again.stdout).replayed).toBe(true);
    expect(won(again.stdout).desktop).toEqual(won(first.stdout).desktop);
    expect(fs.existsSync(path.join(dir, 'data'))).toBe(false); // no SQLite file was made
  });

  it('answers the configured operations and the module federation-wide through the CLI', () => {
    const count = wanas(
      'aggregate',
      '--address',
      entry,
      '--op',
      'inventory.count',
      '--param',
      'sku=widget',
      '--json',
    );
    expect(count.status).toBe(0);
    const res = JSON.parse(count.stdout) as {
      pods: { result: { total: string } }[];
      reduced: { total: string };
    };
    expect(res.pods).toHaveLength(4);
    const sum = res.pods.reduce((n, p) => n + BigInt(p.result.total), 0n);
    expect(res.reduced.total).toBe(sum.toString());
    const search = wanas('aggregate', '--address', entry, '--op', 'catalog.search', '--param', 'q=wid');
    expect(search.status).toBe(0);
    expect(search.stdout).toContain('pods asked 4, ok 4, failed 0');
    const geo = wanas(
      'aggregate',
      '--address',
      entry,
      '--op',
      'geo.where',
      '--param',
      'lat=50',
      '--param',
      'lon=0',
    );
    expect(geo.stdout).toContain('reduced: {"nearest":"eu-west/pod-1"');
  });

  it('stops every backend and the database with the brokers on Ctrl-C', async () => {
    const dbPort = Number(/PostgreSQL at 127\.0\.0\.1:(\d+)/.exec(up!.output())![1]);
    for (const port of [...backendPorts, dbPort]) expect(await listening(port)).toBe(true);
    await up!.stop('SIGINT');
    up = undefined;
    for (const port of [...backendPorts, dbPort]) expect(await listening(port)).toBe(false);
  });
});
