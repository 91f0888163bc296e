/**
 * A federation of real broker processes for end-to-end tests: picks free loopback ports, writes a
 * topology file, starts `wanas broker` per broker (the production entry point), collects each broker's
 * JSON log lines, and stops everything it started.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceClient,
  AggregateRequest,
  AggregateResponse,
  AggregationServiceClient,
  type GetStatusResponse,
} from '@wanas/proto';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';

export const ROOT = path.resolve(__dirname, '../..');
export const WANAS_BIN = path.join(ROOT, 'packages/cli/dist/bin.js');

export { freePorts } from '@wanas/devfed';
import { freePorts } from '@wanas/devfed';
import { stopProcess, waitServing } from '@wanas/devfed';

/** sites → pods → broker count, e.g. `{ 'us-east': { 'pod-1': 2 } }`. */
export type FederationSpec = Record<string, Record<string, number>>;

/** Broker ids are `<site>-<pod>-<letter>`, e.g. `us-east-pod-1-a`. */
export function brokerId(site: string, pod: string, i: number): string {
  return `${site}-${pod}-${String.fromCharCode(97 + i)}`;
}

export interface BrokerProc {
  id: string;
  site: string;
  pod: string;
  address: string;
  proc: ChildProcess | undefined;
  logs: Record<string, unknown>[];
}

export class Federation {
  readonly brokers = new Map<string, BrokerProc>();
  private readonly clients: grpc.Client[] = [];
  /** Credentials clients and health checks use (a client certificate under mTLS). */
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure();

  private constructor(
    readonly dir: string,
    readonly topologyFile: string,
    readonly doc: {
      federation: string;
      settings: Record<string, unknown>;
      sites: { name: string; pods: { name: string; brokers: { id: string; address: string }[] }[] }[];
    },
  ) {}

  /** Writes the topology (ports chosen now) and starts every broker; resolves when all answer SERVING. */
  static async start(
    spec: FederationSpec,
    settings: Record<string, unknown> = {},
    prepare?: (
      dir: string,
      brokerIds: string[],
    ) => Promise<{ security: Record<string, unknown>; credentials: grpc.ChannelCredentials }>,
  ): Promise<Federation> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-e2e-'));
    const count = Object.values(spec).reduce(
      (n, pods) => n + Object.values(pods).reduce((a, b) => a + b, 0),
      0,
    );
    const ports = await freePorts(count);
    const doc = {
      federation: 'e2e',
      settings: { dataDir: path.join(dir, 'data'), ...settings },
      sites: Object.entries(spec).map(([site, pods]) => ({
        name: site,
        pods: Object.entries(pods).map(([pod, n]) => ({
          name: pod,
          brokers: Array.from({ length: n }, (_, i) => ({
            id: brokerId(site, pod, i),
            address: `127.0.0.1:${ports.pop()}`,
          })),
        })),
      })),
    };
    const ids = doc.sites.flatMap((s) => s.pods.flatMap((p) => p.brokers.map((b) => b.id)));
    const prepared = prepare ? await prepare(dir, ids) : undefined;
    const file = path.join(dir, 'topology.yaml');
    fs.writeFileSync(file, YAML.stringify(prepared ? { ...doc, security: prepared.security } : doc));
    const f = new Federation(dir, file, doc);
    if (prepared) f.credentials = prepared.credentials;
    for (const s of doc.sites) {
      for (const p of s.pods) {
        for (const b of p.brokers)
          f.brokers.set(b.id, {
            id: b.id,
            site: s.name,
            pod: p.name,
            address: b.address,
            proc: undefined,
            logs: [],
          });
      }
    }
    // One broker failing to start stops the others: no process outlives the test.
    const started = await Promise.allSettled([...f.brokers.keys()].map((id) => f.startBroker(id)));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await f.stop();
      throw failed.reason;
    }
    return f;
  }

  /** Starts (or restarts) one broker process and waits for SERVING. */
  async startBroker(id: string): Promise<void> {
    const b = this.brokers.get(id)!;
    const proc = spawn(
      process.execPath,
      [
        WANAS_BIN,
        'broker',
        '--topology',
        this.topologyFile,
        '--id',
        id,
        '--log-format',
        'json',
        '--grace',
        '2000',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    b.proc = proc;
    let buf = '';
    proc.stderr!.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          b.logs.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          b.logs.push({ raw: line });
        }
      }
    });
    await this.waitServing(id, 30_000);
  }

  /** Polls grpc.health.v1 until SERVING. */
  async waitServing(id: string, timeoutMs: number): Promise<void> {
    const b = this.brokers.get(id)!;
    await waitServing(b.address, b.proc!, {
      timeoutMs,
      credentials: this.credentials,
      describe: () =>
        `broker ${id}: ${b.logs
          .slice(-25)
          .map((l) => (l.raw as string) ?? JSON.stringify(l))
          .join('\n')}`,
    });
  }

  /** Sends a signal to a broker process (SIGKILL resolves once it has exited). */
  async signal(id: string, sig: NodeJS.Signals): Promise<void> {
    const p = this.brokers.get(id)!.proc!;
    if (sig === 'SIGKILL' || sig === 'SIGTERM') {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill(sig);
      await exited;
    } else {
      p.kill(sig);
    }
  }

  /** A client of one broker's AggregationService. */
  client(id: string): AggregationServiceClient {
    const c = new AggregationServiceClient(this.brokers.get(id)!.address, this.credentials);
    this.clients.push(c);
    return c;
  }

  /** Unary Aggregate through broker `id`. */
  aggregate(id: string, req: Partial<AggregateRequest>, deadlineMs = 15_000): Promise<AggregateResponse> {
    const c = this.client(id);
    return new Promise((resolve, reject) =>
      c.aggregate(
        AggregateRequest.fromPartial(req),
        new grpc.Metadata(),
        { deadline: Date.now() + deadlineMs },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
  }

  /** AdminService/GetStatus of broker `id`. */
  status(id: string): Promise<GetStatusResponse> {
    const c = new AdminServiceClient(this.brokers.get(id)!.address, this.credentials);
    return new Promise((resolve, reject) =>
      c.getStatus({}, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, r) => {
        c.close();
        return e ? reject(e) : resolve(r);
      }),
    );
  }

  /** Every pod as "site/pod", in topology order. */
  allPods(): string[] {
    return this.doc.sites.flatMap((s) => s.pods.map((p) => `${s.name}/${p.name}`));
  }

  /** Stops every broker (SIGCONT first, then SIGTERM; SIGKILL after 5 s) and removes the folder. */
  async stop(): Promise<void> {
    for (const c of this.clients) c.close();
    await Promise.all([...this.brokers.values()].map((b) => stopProcess(b.proc)));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
