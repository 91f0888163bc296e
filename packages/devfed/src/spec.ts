import * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { freePorts } from './ports';
import type { DevBroker } from './supervisor';

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
  /** Extra Node flags per broker (e.g. `--cpu-prof` for one), besides WANAS_BENCH_NODE_ARGS's. */
  nodeArgsFor?: (b: DevBroker) => string[] | undefined;
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
  /** Brokers of one site per process (default 1: a process each). */
  brokersPerProcess?: number;
  /** Sessions a pod's store is seeded with besides the demo users' (its topology's `sessions`). */
  sessions?: (site: string, pod: string) => number;
  /**
   * The topology's `services` section: every pod gets a free loopback port per service (`host:port` for
   * gRPC, `http://host:port` for HTTP), and a service's `dev` command runs once per pod before the brokers.
   */
  services?: Record<string, { grpc?: object; http?: object; dev?: string; maxInFlight?: number }>;
  /** The topology's `operations` section (configured operations and `module:` entries). */
  operations?: unknown[];
}

/** `sites` × `podsPerSite` × `brokersPerPod` named s1…, p1… */

/** `sites` × `podsPerSite` × `brokersPerPod` named s1…, p1… */
function numberedSpec(sites: number, podsPerSite: number, brokersPerPod: number): FederationSpec {
  return Object.fromEntries(
    Array.from({ length: sites }, (_, si) => [
      `s${si + 1}`,
      Object.fromEntries(Array.from({ length: podsPerSite }, (_, pi) => [`p${pi + 1}`, brokersPerPod])),
    ]),
  );
}

/** A spec's federation written to its folder: the topology file, its brokers, the clients' credentials. */
export interface SpecTopology {
  topologyFile: string;
  brokers: Omit<DevBroker, 'proc'>[];
  /** Set when the federation runs with security (mTLS or `prepare`); otherwise plaintext. */
  clientCredentials?: grpc.ChannelCredentials;
  brokerCredentials?: grpc.ChannelCredentials;
}

/**
 * Writes `dir/topology.yaml` for a spec: free loopback ports for every broker's address and WAN address,
 * data under `dir/data`, and the security `prepare` or `tls` asks for (material under `dir`).
 */
export async function specTopology(dir: string, opts: DevFederationOptions): Promise<SpecTopology> {
  const spec = opts.spec ?? numberedSpec(opts.sites ?? 1, opts.podsPerSite ?? 1, opts.brokersPerPod ?? 1);
  const total = Object.values(spec).reduce(
    (n, pods) => n + Object.values(pods).reduce((sum, count) => sum + count, 0),
    0,
  );
  const services = Object.entries(opts.services ?? {});
  const pods = Object.values(spec).reduce((n, p) => n + Object.keys(p).length, 0);
  const ports = await freePorts(total * 2 + pods * services.length);
  const brokers: SpecTopology['brokers'] = [];
  const doc: Record<string, unknown> = {
    federation: 'dev',
    settings: { dataDir: path.join(dir, 'data'), ...opts.settings },
    ...(opts.tracing && { tracing: opts.tracing }),
    ...(opts.services && { services: opts.services }),
    ...(opts.operations && { operations: opts.operations }),
    sites: Object.entries(spec).map(([site, pods]) => ({
      name: site,
      pods: Object.entries(pods).map(([pod, n]) => ({
        name: pod,
        ...(opts.pools?.(site, pod) ? { pools: opts.pools(site, pod) } : {}),
        ...(opts.sessions?.(site, pod) ? { sessions: opts.sessions(site, pod) } : {}),
        ...(services.length && {
          services: Object.fromEntries(
            services.map(([name, svc]) => [name, `${svc.http ? 'http://' : ''}127.0.0.1:${ports.pop()}`]),
          ),
        }),
        brokers: Array.from({ length: n }, (_, bi) => {
          const b = {
            id: `${site}-${pod}-${String.fromCharCode(97 + bi)}`,
            site,
            pod,
            address: `127.0.0.1:${ports.pop()}`,
            wanAddress: `127.0.0.1:${ports.pop()}`,
          };
          brokers.push(b);
          return { id: b.id, address: b.address, wanAddress: b.wanAddress };
        }),
      })),
    })),
  };
  const made: SpecTopology = { topologyFile: path.join(dir, 'topology.yaml'), brokers };
  if (opts.prepare) {
    const prepared = await opts.prepare(
      dir,
      brokers.map((b) => b.id),
    );
    doc.security = prepared.security;
    made.clientCredentials = prepared.credentials;
  }
  if (opts.tls) Object.assign(made, await useTls(dir, doc, brokers[0]!.id, brokers));
  fs.writeFileSync(made.topologyFile, YAML.stringify(doc));
  return made;
}

/**
 * Writes a throwaway CA and certificates under `dir/tls`, turns on mTLS in the topology `doc`; the
 * credentials of a client and of broker `entry`.
 */
async function useTls(
  dir: string,
  doc: Record<string, unknown>,
  entry: string,
  brokers: { id: string }[],
): Promise<Pick<SpecTopology, 'clientCredentials' | 'brokerCredentials'>> {
  const { createTlsDir } = await import('./tls');
  const files = await createTlsDir(
    path.join(dir, 'tls'),
    brokers.map((b) => b.id),
  );
  doc.security = { mode: 'mtls', caFile: files.ca, certFile: files.brokerCert, keyFile: files.brokerKey };
  const read = (f: string) => fs.readFileSync(f);
  return {
    clientCredentials: grpc.credentials.createSsl(
      read(files.ca),
      read(files.clientKey),
      read(files.clientCert),
    ),
    brokerCredentials: grpc.credentials.createSsl(
      read(files.ca),
      read(files.brokerKey.replace('{id}', entry)),
      read(files.brokerCert.replace('{id}', entry)),
    ),
  };
}
