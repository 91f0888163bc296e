/**
 * The multi-process tests' view of the one federation harness (`@wanas/devfed`): real `wanas broker`
 * processes on free loopback ports, the WAN emulator in front of every WAN address (no added delay unless
 * a test asks), each broker's JSON log lines, and a stop that ends everything started. Broker ids are
 * `<site>-<pod>-<letter>`, e.g. `us-east-pod-1-a`.
 */
import * as grpc from '@grpc/grpc-js';
import {
  DevFederation,
  freePorts,
  type DevBackends,
  type DevBroker,
  type DevFederationOptions,
  type FederationSpec,
} from '@wanas/devfed';
import {
  AggregateRequest,
  AggregateResponse,
  AggregationServiceClient,
  type GetStatusResponse,
} from '@wanas/proto';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '../..');
export const WANAS_BIN = path.join(ROOT, 'packages/cli/dist/bin.js');
export { freePorts, type FederationSpec };

/** Broker ids are `<site>-<pod>-<letter>`, e.g. `us-east-pod-1-a`. */
export function brokerId(site: string, pod: string, i: number): string {
  return `${site}-${pod}-${String.fromCharCode(97 + i)}`;
}

/** One broker as a test sees it: where it is, its process, and what it has logged so far. */
export interface BrokerProc extends DevBroker {
  readonly logs: Record<string, unknown>[];
}

/** A running federation for one test file. */
export class Federation {
  /** Every broker by id. */
  readonly brokers = new Map<string, BrokerProc>();
  private readonly clients: grpc.Client[] = [];
  private readonly aggregators = new Map<string, ReturnType<DevFederation['aggregator']>>();

  private constructor(private readonly dev: DevFederation) {
    for (const b of dev.brokers) {
      const proc = Object.defineProperty(b, 'logs', { get: () => dev.logs(b.id), enumerable: true });
      this.brokers.set(b.id, proc as BrokerProc);
    }
  }

  /** Starts every broker (plaintext, or the security `prepare` makes); resolves when all answer SERVING. */
  static async start(
    spec: FederationSpec,
    settings: Record<string, unknown> = {},
    prepare?: (
      dir: string,
      brokerIds: string[],
    ) => Promise<{ security: Record<string, unknown>; credentials: grpc.ChannelCredentials }>,
    more: Pick<DevFederationOptions, 'services' | 'operations'> = {},
  ): Promise<Federation> {
    const dev = await DevFederation.start({
      spec,
      settings,
      prepare,
      ...more,
      wanLatencyMs: 0,
      logLevel: 'info',
      brokerArgs: ['--grace', '2000'],
    });
    return new Federation(dev);
  }

  /** The federation's folder: topology, logs, pod databases under `data/`, TLS material. */
  get dir(): string {
    return this.dev.dir;
  }

  /** The pods' development backends (the services' `dev` commands). */
  get backends(): DevBackends {
    return this.dev.backends;
  }

  /** Credentials of a client (a client certificate under mTLS). */
  get credentials(): grpc.ChannelCredentials {
    return this.dev.clientCredentials;
  }

  /** (Re)starts one broker process and waits for SERVING. */
  startBroker(id: string): Promise<void> {
    return this.dev.startBroker(this.dev.broker(id));
  }

  /** Waits until a broker answers SERVING. */
  waitServing(id: string, timeoutMs: number): Promise<void> {
    return this.dev.waitServing(id, timeoutMs);
  }

  /** Sends a signal to a broker process (SIGKILL and SIGTERM resolve once it has exited). */
  signal(id: string, sig: NodeJS.Signals): Promise<void> {
    return this.dev.signal(id, sig);
  }

  /** A client of one broker's AggregationService. */
  client(id: string): AggregationServiceClient {
    const c = new AggregationServiceClient(this.dev.broker(id).address, this.credentials);
    this.clients.push(c);
    return c;
  }

  /**
   * Unary Aggregate through broker `id` (one long-lived client per broker), a load refusal sent again
   * after its pushback as a well-behaved client does (`DevFederation.aggregator`).
   */
  aggregate(id: string, req: Partial<AggregateRequest>, deadlineMs = 15_000): Promise<AggregateResponse> {
    return this.caller(id, 'retries')(req, deadlineMs);
  }

  /** As {@link aggregate}, but a refusal is the caller's: for tests that count refusals. */
  aggregateOnce(id: string, req: Partial<AggregateRequest>, deadlineMs = 15_000): Promise<AggregateResponse> {
    return this.caller(id, 'once')(req, deadlineMs);
  }

  private caller(id: string, kind: 'retries' | 'once'): ReturnType<DevFederation['aggregator']> {
    const key = `${kind} ${id}`;
    let call = this.aggregators.get(key);
    if (!call)
      this.aggregators.set(
        key,
        (call = this.dev.aggregator(id, kind === 'once' ? { pushbackRetries: 0 } : {})),
      );
    return call;
  }

  /** AdminService/GetStatus of broker `id`. */
  status(id: string): Promise<GetStatusResponse> {
    return this.dev.status(id);
  }

  /** Every pod as "site/pod", in topology order. */
  allPods(): string[] {
    return [...new Set(this.dev.brokers.map((b) => `${b.site}/${b.pod}`))];
  }

  /** Stops every broker and the WAN emulator, and removes the folder. */
  async stop(): Promise<void> {
    for (const c of this.clients) c.close();
    await this.dev.stop();
  }
}
