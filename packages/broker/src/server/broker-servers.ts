import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'winston';
import { MAX_MESSAGE_BYTES, serverOptions } from './server';
import type { BrokerInfo } from '@wanas/topology';
import type { SessionServer } from '../session/session-server';

/** The services whose health a broker reports (the empty name is the whole server). */
const HEALTH_SERVICES = ['', 'wanas.v1.AggregationService', 'wanas.v1.FederationService'];

/**
 * A broker's listeners: the gRPC server at its address, and, when the topology asks for one, a plaintext
 * grpc.health.v1 server for Kubernetes probes (health only). Health is NOT_SERVING until {@link serving}.
 */
export class BrokerServers {
  /** The gRPC server: add services to it before {@link listen}. */
  readonly grpc: grpc.Server;
  private readonly health = new HealthImplementation(
    Object.fromEntries(HEALTH_SERVICES.map((s) => [s, 'NOT_SERVING'])),
  );
  private healthServer: grpc.Server | undefined;
  /** The federation sessions served, drained first at {@link stop}. */
  sessions: SessionServer | undefined;

  constructor(
    private readonly info: BrokerInfo,
    private readonly log: Logger,
    /** Largest message it sends or accepts (the topology's `maxMessageBytes`). */
    maxMessageBytes = MAX_MESSAGE_BYTES,
  ) {
    this.grpc = new grpc.Server(serverOptions(maxMessageBytes));
    this.health.addToServer(this.grpc);
  }

  /** Binds the gRPC server (and the health port); resolves with the gRPC port. Throws naming what failed. */
  async listen(credentials: grpc.ServerCredentials): Promise<number> {
    const { info } = this;
    const port = await bind(this.grpc, info.address, credentials).catch((e: Error) => {
      throw new Error(`broker ${info.id} cannot listen on ${info.address}: ${e.message}`);
    });
    if (!info.healthAddress) return port;
    this.healthServer = new grpc.Server();
    this.health.addToServer(this.healthServer);
    await bind(this.healthServer, info.healthAddress, grpc.ServerCredentials.createInsecure()).catch(
      (e: Error) => {
        this.grpc.forceShutdown();
        throw new Error(`broker ${info.id} cannot serve health on ${info.healthAddress}: ${e.message}`);
      },
    );
    return port;
  }

  /** Sets every health status to SERVING or NOT_SERVING. */
  serving(on: boolean): void {
    for (const svc of HEALTH_SERVICES) this.health.setStatus(svc, on ? 'SERVING' : 'NOT_SERVING');
  }

  /**
   * NOT_SERVING, no new calls; calls in flight get `graceMs` to finish, then are cancelled. Each session
   * takes no new request and ends once its requests in flight are answered.
   */
  async stop(graceMs: number): Promise<void> {
    this.serving(false);
    this.sessions?.drain();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.log.warn('grace period over; cancelling calls still in flight');
        this.grpc.forceShutdown();
        resolve();
      }, graceMs);
      force.unref();
      this.grpc.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    this.healthServer?.forceShutdown();
  }
}

function bind(server: grpc.Server, address: string, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, credentials, (e, p) => (e ? reject(e) : resolve(p))),
  );
}
