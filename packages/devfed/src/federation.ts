import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceClient,
  AggregateRequest,
  AggregationServiceClient,
  Hedging,
  msToDuration,
  pushbackMsOf,
  type AggregateResponse,
  type GetStatusResponse,
} from '@wanas/proto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BrokerProcessOptions } from './processes';
import { specTopology, type DevFederationOptions } from './spec';
import { DevBackends } from './backends';
import { BrokerSupervisor, logTail, type DevBroker, type SupervisedRow } from './supervisor';
import { WanEmulator, type WanLink } from './wan-emulator';

/** How {@link DevFederation.open} runs the brokers of a topology file that exists. */
export interface OpenOptions {
  topologyFile: string;
  /** The brokers that file lists. */
  brokers: Iterable<Omit<DevBroker, 'proc'>>;
  /** The federation's folder: logs in `logs/`. */
  dir: string;
  /** Remove `dir` at stop (a throwaway federation's temporary folder). */
  removeDir: boolean;
  /** One-way WAN delay and jitter, ms. */
  wanLatencyMs: number;
  jitterMs?: number;
  /** Restart a broker that dies (`wanas up --restart`). */
  restart?: boolean;
  /** Brokers of one site per process (default 1; see `SupervisorOptions.brokersPerProcess`). */
  brokersPerProcess?: number;
  /** Credentials of a client, to wait for SERVING (default plaintext). */
  clientCredentials?: grpc.ChannelCredentials;
  /** More `spawnBroker` options per broker (flags, Node flags, environment, log level, process group). */
  spawnOptions?: (b: DevBroker) => Partial<BrokerProcessOptions>;
  /** Where brokers' deaths and restarts are told (default: silent). */
  say?: (line: string) => void;
  /** Called when a broker's process changes (a restart). */
  changed?: () => void;
  /** Where the services' `dev` commands run (default: the topology file's folder). */
  workDir?: string;
}

/**
 * A federation of real broker processes with the WAN emulator running in this process (keep this process
 * responsive: a blocking call stalls every emulated link): `wanas up`, the benchmarks and the
 * multi-process tests run brokers only through it. {@link start} makes one from a spec (sites and pods,
 * brokers `<site>-<pod>-a`, …, in a temporary folder); {@link open} runs a topology file that exists.
 * Each broker logs to its own file; {@link stop} ends everything started.
 */
export class DevFederation {
  readonly brokers: DevBroker[];
  readonly wan: WanEmulator;
  /** Brokers whose `wanAddress` equals their `address`: no emulated link in front of them. */
  readonly unemulated: string[];
  /** Credentials of a client (AggregationService, AdminService): plaintext, or the client certificate. */
  clientCredentials: grpc.ChannelCredentials;
  /**
   * Credentials that call FederationService as broker `s1-p1-a` would (the flat alternatives fan out
   * as the entry broker): plaintext, or that broker's certificate.
   */
  brokerCredentials = grpc.credentials.createInsecure();
  /** The pods' development backends (the topology's `dev` commands); started by {@link startBackends}. */
  readonly backends: DevBackends;
  private readonly processes: BrokerSupervisor;
  private readonly clients: grpc.Client[] = [];
  /** What {@link logs} has read of each broker's log file. */
  private readonly logCache: Record<
    string,
    { offset: number; partial: string; lines: Record<string, unknown>[] }
  > = {};

  private constructor(private readonly opened: OpenOptions) {
    this.brokers = [...opened.brokers].map((b) => ({ ...b, proc: undefined }));
    this.clientCredentials = opened.clientCredentials ?? grpc.credentials.createInsecure();
    fs.mkdirSync(path.join(opened.dir, 'logs'), { recursive: true });
    const links: WanLink[] = this.brokers
      .filter((b) => b.wanAddress !== b.address)
      .map((b) => ({ brokerId: b.id, site: b.site, listen: b.wanAddress, target: b.address }));
    this.unemulated = this.brokers.filter((b) => b.wanAddress === b.address).map((b) => b.id);
    this.wan = new WanEmulator(links, { latencyMs: opened.wanLatencyMs, jitterMs: opened.jitterMs });
    this.processes = new BrokerSupervisor({
      topologyFile: opened.topologyFile,
      logFile: (id) => this.logFile(id),
      restart: opened.restart ?? false,
      spawnOptions: opened.spawnOptions,
      say: opened.say,
      changed: opened.changed,
      brokersPerProcess: opened.brokersPerProcess,
    });
    this.processes.addAll(this.brokers);
    this.backends = new DevBackends(opened.topologyFile, path.join(opened.dir, 'logs'), opened.workDir);
  }

  /** Starts the pods' development backends (none without `dev` commands) and waits until they listen. */
  startBackends(): Promise<void> {
    return this.backends.startAll();
  }

  /**
   * Starts the WAN emulator in front of a topology file's brokers; {@link startAll} then starts them and
   * {@link waitAllServing} waits for them. Rejects when the emulator cannot listen.
   */
  static async open(opts: OpenOptions): Promise<DevFederation> {
    const f = new DevFederation(opts);
    await f.wan.start();
    return f;
  }

  /** Starts every broker's process; does not wait for them to serve. */
  startAll(): void {
    this.processes.startAll();
  }

  /** Makes a federation from a spec in a temporary folder, starts it and waits until all are SERVING. */
  static async start(opts: DevFederationOptions): Promise<DevFederation> {
    const nodeArgs = benchNodeArgs();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-dev-'));
    const made = await specTopology(dir, opts);
    const f = await DevFederation.open({
      topologyFile: made.topologyFile,
      brokers: made.brokers,
      dir,
      removeDir: true,
      wanLatencyMs: opts.wanLatencyMs,
      clientCredentials: made.clientCredentials,
      brokersPerProcess: opts.brokersPerProcess,
      spawnOptions: (b) => ({
        logLevel: opts.logLevel ?? 'warn',
        args: [
          ...(opts.injectSlow?.(b) ? ['--inject-slow', opts.injectSlow(b)!] : []),
          ...(opts.brokerArgs ?? []),
        ],
        nodeArgs: [...(nodeArgs(b.id) ?? []), ...(opts.nodeArgsFor?.(b) ?? [])],
        env: opts.envFor?.(b),
      }),
    });
    if (made.brokerCredentials) f.brokerCredentials = made.brokerCredentials;
    await f.startBackends().catch(async (e: unknown) => {
      await f.stop();
      throw e;
    });
    f.startAll();
    // One broker failing to start stops the others (and the emulator): no process outlives the federation.
    const ready = await f.waitAllServing(60_000);
    if (!ready.ok) {
      await f.stop();
      throw new Error(ready.message);
    }
    return f;
  }

  /**
   * (Re)starts one broker process and waits for SERVING. A process just sent a signal (a test's SIGKILL)
   * is first given up to 5 s to exit; one still running is refused (see {@link BrokerSupervisor.start}).
   */
  async startBroker(b: DevBroker | string): Promise<void> {
    const id = typeof b === 'string' ? b : b.id;
    const old = this.broker(id).proc;
    if (old?.killed && old.exitCode === null && old.signalCode === null)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 5000);
        old.once('exit', () => resolve(clearTimeout(t)));
      });
    this.processes.start(id);
    await this.waitServing(id, 60_000);
  }

  /** Waits until a broker answers SERVING (it must be running); throws with its last log lines otherwise. */
  waitServing(id: string, timeoutMs: number): Promise<void> {
    return this.processes.waitServing(id, this.clientCredentials, timeoutMs);
  }

  /** Waits until every broker answers SERVING (or `cancelled()`); says which did not. */
  waitAllServing(
    timeoutMs: number,
    cancelled?: () => boolean,
  ): Promise<{ ok: true } | { ok: false; message: string }> {
    return this.processes.waitAllServing(this.clientCredentials, timeoutMs, cancelled);
  }

  /** Every broker's row: where it listens, its pid while alive, its log (`wanas up`'s table). */
  rows(): SupervisedRow[] {
    return this.processes.rows();
  }

  /** The federation's folder (logs; for a spec's federation also topology, data and TLS material). */
  get dir(): string {
    return this.opened.dir;
  }

  /**
   * Where a broker logs: `logs/` under the federation's folder, not beside the topology file, whose folder
   * every broker watches (each line written there would wake every broker).
   */
  logFile(id: string): string {
    return path.join(this.dir, 'logs', `${id}.log`);
  }

  /** The last lines of a broker's log, for an error message (a spec's folder is removed at stop). */
  logTail(id: string): string {
    return logTail(this.logFile(id));
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

  /**
   * A long-lived Aggregate client of a broker (LAN address); each call's gRPC deadline defaults to 30 s.
   * It behaves as the README asks of a client: a load refusal (RESOURCE_EXHAUSTED with a
   * `grpc-retry-pushback-ms` trailer) is sent again once its pushback has passed, while the deadline
   * allows, at most `pushbackRetries` times ({@link PUSHBACK_RETRIES}; 0 for a client that counts
   * refusals, as a load generator does). Every other error is the caller's.
   */
  aggregator(
    id: string,
    { pushbackRetries = PUSHBACK_RETRIES }: { pushbackRetries?: number } = {},
  ): (req: Partial<AggregateRequest>, deadlineMs?: number) => Promise<AggregateResponse> {
    const c = new AggregationServiceClient(this.broker(id).address, this.clientCredentials);
    this.clients.push(c);
    const once = (req: AggregateRequest, deadline: number) =>
      new Promise<AggregateResponse>((resolve, reject) =>
        c.aggregate(req, new grpc.Metadata(), { deadline }, (e, r) => (e ? reject(e) : resolve(r))),
      );
    return async (partial, deadlineMs = 30_000) => {
      const req = AggregateRequest.fromPartial(partial);
      const deadline = Date.now() + deadlineMs;
      for (let retries = 0; ; retries++) {
        try {
          return await once(req, deadline);
        } catch (e) {
          const pushbackMs = pushbackMsOf(e);
          if (pushbackMs === undefined || retries >= pushbackRetries || Date.now() + pushbackMs >= deadline)
            throw e;
          await new Promise((r) => setTimeout(r, pushbackMs));
        }
      }
    };
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
          // One representative per site: a hedge on a loaded machine would add a third hop to count.
          hedging: Hedging.HEDGING_OFF,
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
    return this.opened.topologyFile;
  }

  /** Stops every broker (SIGKILL after `graceMs`) and the emulator; removes a spec's folder. */
  async stop(graceMs = 5000): Promise<void> {
    for (const c of this.clients) c.close();
    await this.processes.stopAll(graceMs);
    await this.backends.stopAll();
    await this.wan.close();
    if (this.opened.removeDir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Extra Node flags for the brokers of a harness federation, from `env`: WANAS_BENCH_NODE_ARGS (e.g.
 * '--cpu-prof --cpu-prof-dir=/tmp/prof') for every broker, or only for those whose id matches the regular
 * expression WANAS_BENCH_NODE_ARGS_FOR (`s2-p2-a`: profile one broker without slowing the other 23).
 * Read once; a bad expression throws an error naming the variable, before any broker starts.
 */
export function benchNodeArgs(
  env: NodeJS.ProcessEnv = process.env,
): (brokerId: string) => string[] | undefined {
  const args = env.WANAS_BENCH_NODE_ARGS?.split(/\s+/).filter(Boolean);
  const only = env.WANAS_BENCH_NODE_ARGS_FOR;
  let match: RegExp | undefined;
  try {
    match = only ? new RegExp(only) : undefined;
  } catch (e) {
    throw new Error(
      `WANAS_BENCH_NODE_ARGS_FOR: "${only}" is not a regular expression (${(e as Error).message})`,
    );
  }
  return (brokerId) => (match && !match.test(brokerId) ? undefined : args);
}

/** How many times a DevFederation client sends a refused call again after its pushback, by default. */
export const PUSHBACK_RETRIES = 10;
