import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceClient,
  AggregateRequest,
  AggregationServiceClient,
  msToDuration,
  type AggregateResponse,
  type GetStatusResponse,
} from '@wanas/proto';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { WanEmulator } from './wan-emulator';
import { spawnBroker, stopProcess, waitServing } from './processes';

/** One broker of a local federation. */
export interface DevBroker {
  id: string;
  site: string;
  pod: string;
  address: string;
  wanAddress: string;
  proc: ChildProcess | undefined;
}

/** sites → pods → broker count, e.g. `{ 'us-east': { 'pod-1': 2 } }`; broker ids are `<site>-<pod>-<letter>`. */
export type FederationSpec = Record<string, Record<string, number>>;

/**
 * Shape and behaviour of a local federation: `spec`, or `sites` × `podsPerSite` × `brokersPerPod` named
 * s1…, p1… (broker `s1-p1-a`).
 */
export interface DevFederationOptions {
  spec?: FederationSpec;
  sites?: number;
  podsPerSite?: number;
  brokersPerPod?: number;
  /** One-way WAN delay, ms (0: no emulator delay, but traffic still crosses it). */
  wanLatencyMs: number;
  /**
   * Security of the topology and the clients' credentials, made in the federation's folder before the
   * brokers start (e.g. certificates and tokens); `tls` is the ready-made mTLS one.
   */
  prepare?: (
    dir: string,
    brokerIds: string[],
  ) => Promise<{ security: Record<string, unknown>; credentials: grpc.ChannelCredentials }>;
  /** Extra `wanas broker` flags for every broker (e.g. `--grace 2000`). */
  brokerArgs?: string[];
  settings?: Record<string, unknown>;
  /** The topology's `tracing` section (OTLP endpoint, protocol, sampler, service name). */
  tracing?: Record<string, unknown>;
  /** Extra environment per broker (e.g. NODE_OPTIONS). */
  envFor?: (b: DevBroker) => Record<string, string>;
  /** Fault injection per broker: `RATIO:MS` of federation requests answered late (`wanas broker --inject-slow`). */
  injectSlow?: (b: DevBroker) => string | undefined;
  /** mTLS between brokers and from the clients (throwaway CA and certificates). */
  tls?: boolean;
  /** Brokers' log level (default `warn`; `info` logs every request, for parts that read the logs). */
  logLevel?: 'warn' | 'info';
  /** Desktops per pool a pod starts with (its topology's `pools`); undefined: the default pools. */
  pools?: (site: string, pod: string) => Record<string, number> | undefined;
}

/** `sites` × `podsPerSite` × `brokersPerPod` named s1…, p1… */
function numberedSpec(sites: number, podsPerSite: number, brokersPerPod: number): FederationSpec {
  return Object.fromEntries(
    Array.from({ length: sites }, (_, si) => [
      `s${si + 1}`,
      Object.fromEntries(Array.from({ length: podsPerSite }, (_, pi) => [`p${pi + 1}`, brokersPerPod])),
    ]),
  );
}

/** The first port of the kernel's ephemeral range (outgoing connections take ports from it). */
function ephemeralStart(): number {
  try {
    const [lo] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/);
    const n = Number(lo);
    return Number.isInteger(n) && n > 12_000 ? n : 32_768;
  } catch {
    return 32_768;
  }
}

/** Ports handed out by this process, never handed out twice. */
const handedOut = new Set<number>();

/** Whether a loopback port can be bound right now. */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * Free loopback ports for processes to listen on. They are chosen below the kernel's ephemeral range:
 * a port picked by binding to 0 comes from that range, and between release and the child's bind an
 * outgoing connection of any process (brokers dial each other constantly) can take it.
 */
export async function freePorts(n: number): Promise<number[]> {
  const hi = ephemeralStart() - 1;
  const lo = Math.max(10_000, hi - 20_000);
  const ports: number[] = [];
  for (let tries = 0; ports.length < n; tries++) {
    if (tries > n * 50 + 1000) throw new Error(`could not find ${n} free ports in ${lo}-${hi}`);
    const p = lo + Math.floor(Math.random() * (hi - lo));
    if (handedOut.has(p) || !(await bindable(p))) continue;
    handedOut.add(p);
    ports.push(p);
  }
  return ports;
}

/**
 * A federation of real broker processes with the WAN emulator running in this process (keep this process
 * responsive: a blocking call stalls every emulated link), for the benchmarks and the multi-process tests.
 * Sites and pods from a spec (or `s1..sN` × `p1..pM`), brokers `<site>-<pod>-a`, …; each broker's log in
 * its own file in the federation's folder, which {@link stop} removes with everything started.
 */
export class DevFederation {
  readonly brokers: DevBroker[] = [];
  readonly dir: string;
  wan!: WanEmulator;
  /** Credentials of a client (AggregationService, AdminService): plaintext, or the client certificate. */
  clientCredentials = grpc.credentials.createInsecure();
  /**
   * Credentials that call FederationService as broker `s1-p1-a` would (the flat alternatives fan out
   * as the entry broker): plaintext, or that broker's certificate.
   */
  brokerCredentials = grpc.credentials.createInsecure();
  private readonly clients: grpc.Client[] = [];
  /** What {@link logs} has read of each broker's log file. */
  private readonly logCache: Record<
    string,
    { offset: number; partial: string; lines: Record<string, unknown>[] }
  > = {};

  private constructor(readonly opts: DevFederationOptions) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-dev-'));
    fs.mkdirSync(path.join(this.dir, 'logs'));
  }

  /** Starts every broker and waits until all are SERVING. */
  static async start(opts: DevFederationOptions): Promise<DevFederation> {
    const f = new DevFederation(opts);
    const spec = opts.spec ?? numberedSpec(opts.sites ?? 1, opts.podsPerSite ?? 1, opts.brokersPerPod ?? 1);
    const total = Object.values(spec).reduce(
      (n, pods) => n + Object.values(pods).reduce((a, b) => a + b, 0),
      0,
    );
    const ports = await freePorts(total * 2);
    const doc: Record<string, unknown> = {
      federation: 'dev',
      settings: { dataDir: path.join(f.dir, 'data'), ...opts.settings },
      ...(opts.tracing && { tracing: opts.tracing }),
      sites: Object.entries(spec).map(([site, pods]) => ({
        name: site,
        pods: Object.entries(pods).map(([pod, n]) => ({
          name: pod,
          ...(opts.pools?.(site, pod) ? { pools: opts.pools(site, pod) } : {}),
          brokers: Array.from({ length: n }, (_, bi) => {
            const b: DevBroker = {
              id: `${site}-${pod}-${String.fromCharCode(97 + bi)}`,
              site,
              pod,
              address: `127.0.0.1:${ports.pop()}`,
              wanAddress: `127.0.0.1:${ports.pop()}`,
              proc: undefined,
            };
            f.brokers.push(b);
            return { id: b.id, address: b.address, wanAddress: b.wanAddress };
          }),
        })),
      })),
    };
    if (opts.prepare) {
      const prepared = await opts.prepare(
        f.dir,
        f.brokers.map((b) => b.id),
      );
      doc.security = prepared.security;
      f.clientCredentials = prepared.credentials;
    }
    if (opts.tls) await f.useTls(doc);
    fs.writeFileSync(path.join(f.dir, 'topology.yaml'), YAML.stringify(doc));
    f.wan = new WanEmulator(
      f.brokers.map((b) => ({ brokerId: b.id, site: b.site, listen: b.wanAddress, target: b.address })),
      { latencyMs: opts.wanLatencyMs },
    );
    await f.wan.start();
    // One broker failing to start stops the others (and the emulator): no process outlives the federation.
    const started = await Promise.allSettled(f.brokers.map((b) => f.startBroker(b)));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await f.stop();
      throw failed.reason;
    }
    return f;
  }

  /** Writes a throwaway CA and certificates, turns on mTLS in the topology `doc`, sets the credentials. */
  private async useTls(doc: Record<string, unknown>): Promise<void> {
    const { createTlsDir } = await import('./tls');
    const files = await createTlsDir(
      path.join(this.dir, 'tls'),
      this.brokers.map((b) => b.id),
    );
    doc.security = { mode: 'mtls', caFile: files.ca, certFile: files.brokerCert, keyFile: files.brokerKey };
    const read = (f: string) => fs.readFileSync(f);
    this.clientCredentials = grpc.credentials.createSsl(
      read(files.ca),
      read(files.clientKey),
      read(files.clientCert),
    );
    const entry = this.brokers[0]!.id;
    this.brokerCredentials = grpc.credentials.createSsl(
      read(files.ca),
      read(files.brokerKey.replace('{id}', entry)),
      read(files.brokerCert.replace('{id}', entry)),
    );
  }

  /** Starts one broker process and waits for SERVING. */
  async startBroker(b: DevBroker): Promise<void> {
    b.proc = spawnBroker({
      topologyFile: this.topologyFile,
      id: b.id,
      logFile: this.logFile(b.id),
      logLevel: this.opts.logLevel ?? 'warn',
      args: [
        ...(this.opts.injectSlow?.(b) ? ['--inject-slow', this.opts.injectSlow(b)!] : []),
        ...(this.opts.brokerArgs ?? []),
      ],
      // Extra Node flags for every broker, e.g. WANAS_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'.
      nodeArgs: process.env.WANAS_BENCH_NODE_ARGS?.split(/\s+/).filter(Boolean),
      env: this.opts.envFor?.(b),
    });
    await this.waitServing(b.id, 60_000);
  }

  /** Waits until a broker answers SERVING (it must be running); throws with its last log lines otherwise. */
  async waitServing(id: string, timeoutMs: number): Promise<void> {
    const b = this.broker(id);
    await waitServing(b.address, b.proc!, {
      timeoutMs,
      credentials: this.clientCredentials,
      describe: () => `broker ${b.id} did not start: ${this.logTail(b.id)}`,
    });
  }

  /**
   * Where a broker logs: `logs/` under the federation's folder, not beside the topology file, whose folder
   * every broker watches (each line written there would wake every broker).
   */
  logFile(id: string): string {
    return path.join(this.dir, 'logs', `${id}.log`);
  }

  /** The last lines of a broker's log, for an error message (the folder is removed at stop). */
  logTail(id: string): string {
    try {
      const lines = fs.readFileSync(this.logFile(id), 'utf8').trim().split('\n');
      return lines.slice(-5).join(' | ') || '(empty log)';
    } catch {
      return '(no log)';
    }
  }

  /**
   * Every JSON line a broker has logged so far (a line that is not JSON as `{ raw }`), across restarts.
   * Reads only what was appended since the last call: tests poll it while this process runs the WAN
   * emulator.
   */
  logs(id: string): Record<string, unknown>[] {
    const log = (this.logCache[id] ??= { offset: 0, partial: '', lines: [] });
    let fd: number;
    try {
      fd = fs.openSync(this.logFile(id), 'r');
    } catch {
      return [...log.lines];
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= log.offset) return [...log.lines];
      const chunk = Buffer.alloc(size - log.offset);
      fs.readSync(fd, chunk, 0, chunk.length, log.offset);
      log.offset = size;
      const text = log.partial + chunk.toString('utf8');
      const complete = text.split('\n');
      log.partial = complete.pop() ?? '';
      for (const line of complete.filter(Boolean)) {
        try {
          log.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          log.lines.push({ raw: line });
        }
      }
      return [...log.lines];
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Sends a signal to a broker's process; SIGKILL and SIGTERM resolve once it has exited. */
  async signal(id: string, sig: NodeJS.Signals): Promise<void> {
    const p = this.broker(id).proc!;
    if ((sig === 'SIGKILL' || sig === 'SIGTERM') && p.exitCode === null && p.signalCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill(sig);
      await exited;
    } else p.kill(sig);
  }

  /** The broker by id. */
  broker(id: string): DevBroker {
    const b = this.brokers.find((x) => x.id === id);
    if (!b) throw new Error(`no broker ${id}`);
    return b;
  }

  /** A long-lived Aggregate client of a broker (LAN address); each call's gRPC deadline defaults to 30 s. */
  aggregator(
    id: string,
  ): (req: Partial<AggregateRequest>, deadlineMs?: number) => Promise<AggregateResponse> {
    const c = new AggregationServiceClient(this.broker(id).address, this.clientCredentials);
    this.clients.push(c);
    return (req, deadlineMs = 30_000) =>
      new Promise((resolve, reject) =>
        c.aggregate(
          AggregateRequest.fromPartial(req),
          new grpc.Metadata(),
          { deadline: Date.now() + deadlineMs },
          (e, r) => (e ? reject(e) : resolve(r)),
        ),
      );
  }

  /**
   * Sends an Aggregate to broker `id` whose every pod sleeps `sleepMs` (attempts long enough that only the
   * cancel can end a hop early), cancels it after `cancelAtMs`, and resolves once the call ended.
   */
  async cancelledAggregate(
    id: string,
    correlationId: string,
    cancelAtMs: number,
    sleepMs = 4000,
  ): Promise<void> {
    const client = this.track(new AggregationServiceClient(this.broker(id).address, this.clientCredentials));
    await new Promise<void>((resolve) => {
      const call = client.aggregate(
        AggregateRequest.fromPartial({
          correlationId,
          operation: 'echo',
          params: { sleepMs },
          timeout: msToDuration(sleepMs + 6000),
          attemptTimeout: msToDuration(sleepMs + 1000),
        }),
        new grpc.Metadata(),
        { deadline: Date.now() + sleepMs + 11_000 },
        () => resolve(),
      );
      setTimeout(() => call.cancel(), cancelAtMs);
    });
  }

  /** A broker's AdminService/GetStatus (2 s deadline). */
  status(id: string): Promise<GetStatusResponse> {
    const c = new AdminServiceClient(this.broker(id).address, this.clientCredentials);
    return new Promise<GetStatusResponse>((resolve, reject) =>
      c.getStatus({}, new grpc.Metadata(), { deadline: Date.now() + 2000 }, (e, r) => {
        c.close();
        return e ? reject(e) : resolve(r);
      }),
    );
  }

  /** Remembers a client to close at stop. */
  track<C extends grpc.Client>(c: C): C {
    this.clients.push(c);
    return c;
  }

  /** The topology file the brokers run with. */
  get topologyFile(): string {
    return path.join(this.dir, 'topology.yaml');
  }

  /** Stops every broker and the emulator; removes the folder. */
  async stop(): Promise<void> {
    for (const c of this.clients) c.close();
    await Promise.all([...new Set(this.brokers.map((b) => b.proc))].map((p) => stopProcess(p)));
    await this.wan.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
