import { ConnectionManager, type ConnectionManagerOptions, type PeerGroup } from '@wanas/connection-manager';
import { HedgeBudget } from '@wanas/iterator';
import { GetStatusResponse } from '@wanas/proto';
import type { Logger } from 'winston';
import { BrokerServers } from './server/broker-servers';
import type { Admission } from './server/admission/admission';
import { admissionFor } from './server/admission/broker-admission';
import type { ClientGate } from './server/admission/client-gate';
import { brokerStatus } from './broker-status';
import { Dispatcher } from './engine/dispatcher';
import { createLogger } from './telemetry/logger';
import { LoopLag } from './telemetry/loop-lag';
import { BrokerMetrics } from './telemetry/metrics';
import { BrokerConsole } from './console/broker-console';
import { startHttpListener, type HttpRoute } from './server/http-listener';
import { listOperations, operationsCatalog } from './operations/catalog';
import type { OperationRegistry } from './operations/registry';
import { addReflection } from './server/reflection';
import { createSecurity, type BrokerSecurity } from './server/security';
import { createHandlers, type AdminAnswers, type FaultInjection } from './server/server';
import { SESSION_RETRY_AFTER_MS, SessionPool } from './session/session-pool';
import { openPodState } from './store/open-state';
import type { PodState } from './store/pod-state';
import { PostgresPodState, SchemaTooNewError } from './store/postgres-state';
import { TopologySource } from '@wanas/topology';
import { startTracing } from './telemetry/tracing';
import { dnsSelf, findBroker, loadTopology, type BrokerInfo, type Topology } from '@wanas/topology';

/** Grace period for in-flight calls at shutdown, ms. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

/** Options of {@link startBroker}. */
export interface BrokerOptions {
  /** This broker's id in the topology (for a DNS pod: any unique name, e.g. the Kubernetes pod name). */
  id: string;
  /** Run as a replica of this pod, whose brokers the topology gives as `dns:///NAME:PORT`. */
  pod?: { site: string; pod: string };
  /** For a DNS pod: listen here instead of the pod's `listen` address. */
  listen?: string;
  /** The topology file (watched for changes unless `watch` is false). */
  topologyFile?: string;
  /** An already-loaded topology (instead of a file). */
  topology?: Topology;
  /** Reload the topology when its file changes (default true when a file is given). */
  watch?: boolean;
  /** Logger (default: winston to stderr, JSON unless on a terminal). */
  logger?: Logger;
  /** Operations beside the topology's configured ones and modules (default: the built-in ones). */
  operations?: OperationRegistry;
  /** Overrides of the connection manager's options. */
  connectionManager?: Omit<ConnectionManagerOptions, 'logger'>;
  /** host:port for /metrics and /status (default: the topology's `metricsAddress`, else none). */
  metricsAddress?: string;
  /** Faults to inject on purpose (tests and benchmarks only; the broker logs a warning). */
  faults?: FaultInjection;
  /**
   * Open and serve federation sessions (default: `WANAS_SESSIONS` when set to on/off, else the topology's
   * `settings.sessions`). Off, the broker calls its peers and is called unary only, as an older version.
   */
  sessions?: boolean;
}

/** A running broker. */
export interface BrokerHandle {
  readonly info: BrokerInfo;
  /** The port the gRPC server listens on. */
  readonly port: number;
  /** The port of /metrics, /status and the console, when served. */
  readonly metricsPort: number | undefined;
  /** The URL of that listener (`https://` under mTLS), when served: the console is at its `/`. */
  readonly httpUrl: string | undefined;
  /** The topology in force. */
  topology(): Topology;
  /** Re-reads the topology file and applies it; returns false (and keeps the old one) when it is invalid. */
  reload(): boolean;
  /** This broker's view: identity, topology, channels, health per endpoint (AdminService/GetStatus). */
  status(): GetStatusResponse;
  /**
   * Graceful stop: health NOT_SERVING, no new calls, in-flight calls finish within `graceMs`, then
   * everything closes.
   */
  close(graceMs?: number): Promise<void>;
}

/** The target lists a broker keeps warm: every remote site (at wanAddress) and every other pod of its site (at address). */
export function peerGroupsFor(t: Topology, self: BrokerInfo): PeerGroup[] {
  const groups: PeerGroup[] = [];
  for (const site of t.sites) {
    if (site.name === self.site) {
      for (const pod of site.pods) {
        if (pod.name === self.pod) continue;
        groups.push({
          site: site.name,
          pod: pod.name,
          endpoints: pod.brokers.map((b) => ({
            brokerId: b.id,
            address: b.address,
            site: site.name,
            pod: pod.name,
          })),
        });
      }
    } else {
      groups.push({
        site: site.name,
        pod: '',
        endpoints: site.pods.flatMap((p) =>
          p.brokers.map((b) => ({ brokerId: b.id, address: b.wanAddress, site: site.name, pod: p.name })),
        ),
      });
    }
  }
  return groups;
}

/** Adds the handlers and reflection to the gRPC server and listens; the port bound. */
async function serveRpc(
  servers: BrokerServers,
  parts: {
    dispatcher: Dispatcher;
    log: Logger;
    metrics: BrokerMetrics;
    admin: AdminAnswers;
    security: BrokerSecurity;
    topology: () => Topology;
    faults: BrokerOptions['faults'];
    onCall: () => void;
    sessions: SessionPool | undefined;
    admission: Admission;
    gate: ClientGate;
    onAggregate: BrokerConsole['aggregateServed'];
  },
): Promise<number> {
  const handlers = createHandlers(
    parts.dispatcher,
    parts.admin,
    {
      log: parts.log.child({ component: 'server' }),
      metrics: parts.metrics,
      security: parts.security,
      admission: parts.admission,
      gate: parts.gate,
      faults: parts.faults,
      onCall: parts.onCall,
    },
    { sessions: parts.sessions !== undefined, onAggregate: parts.onAggregate },
  );
  handlers.addTo(servers.grpc);
  const { sessions } = parts;
  if (sessions)
    parts.metrics.sessionGauges(
      () => sessions.stats(),
      () => handlers.sessions?.size ?? 0,
    );
  addReflection(servers.grpc);
  servers.sessions = handlers.sessions;
  return servers.listen(parts.security.serverCredentials);
}

/**
 * Whether a broker opens and serves federation sessions: its option, else `WANAS_SESSIONS` (on/off),
 * else the topology's `settings.sessions`. Throws naming the variable for any other value.
 */
function sessionsWanted(opts: BrokerOptions, t: Topology): boolean {
  if (opts.sessions !== undefined) return opts.sessions;
  const env = process.env.WANAS_SESSIONS;
  if (env === undefined || env === '') return t.settings.sessions;
  if (env === 'on' || env === 'off') return env === 'on';
  throw new Error(`WANAS_SESSIONS must be "on" or "off", not "${env}"`);
}

/** The sessions a broker opens to its peers, with the topology's bounds; undefined when sessions are off. */
function sessionPoolFor(on: boolean, t: Topology, log: Logger): SessionPool | undefined {
  if (!on) return undefined;
  return new SessionPool({
    perPeer: t.settings.sessionsPerPeer,
    maxInFlight: t.settings.sessionMaxInFlight,
    retryAfterMs: SESSION_RETRY_AFTER_MS,
    log: log.child({ component: 'sessions' }),
  });
}

/**
 * The budgets a broker's requests share (~10% of requests each): hedges (none while the broker is
 * saturated), and failovers away from a peer that refused for load (busy is not broken).
 */
function requestBudgets(lag: LoopLag): { hedgeBudget: HedgeBudget; busyRetryBudget: HedgeBudget } {
  return {
    hedgeBudget: new HedgeBudget(undefined, undefined, undefined, () => lag.saturated()),
    busyRetryBudget: new HedgeBudget(),
  };
}

/** The broker's metrics: calls, the connection manager's health, the request budgets, the sites' round trips. */
function brokerMetrics(
  info: BrokerInfo,
  cm: ConnectionManager,
  budgets: { hedgeBudget: HedgeBudget; busyRetryBudget: HedgeBudget },
  topology: () => Topology,
): BrokerMetrics {
  return new BrokerMetrics({ broker: info.id, site: info.site, pod: info.pod }, cm, {
    ...budgets,
    siteRoundTripMs: (site) => siteRoundTripMs(topology(), cm, site),
    remoteSites: () =>
      topology()
        .sites.map((s) => s.name)
        .filter((s) => s !== info.site),
  });
}

/** The fastest usual answer of any broker of a remote site (about one WAN round trip), ms; undefined before any. */
function siteRoundTripMs(t: Topology, cm: ConnectionManager, site: string): number | undefined {
  let best: number | undefined;
  for (const pod of t.sites.find((s) => s.name === site)?.pods ?? []) {
    for (const b of pod.brokers) {
      const ms = cm.latencyFloorMs({ brokerId: b.id, address: b.wanAddress });
      if (ms !== undefined && (best === undefined || ms < best)) best = ms;
    }
  }
  return best;
}

/** Starts one broker: gRPC server (aggregation, federation, health, reflection), warm peer channels, metrics. */
export async function startBroker(opts: BrokerOptions): Promise<BrokerHandle> {
  const initial = opts.topology ?? loadTopology(requireFile(opts.topologyFile));
  const whoAmI = selfFinder(opts);
  const info = whoAmI(initial);
  const log = (opts.logger ?? createLogger()).child({ broker: info.id, site: info.site, pod: info.pod });
  const started = Date.now();
  // Read before anything is opened: a bad WANAS_SESSIONS refuses the start with nothing to close.
  const sessions = sessionPoolFor(sessionsWanted(opts, initial), initial, log);
  // Pods given as dns:///NAME:PORT are resolved once before serving, then kept fresh (see TopologySource).
  const source = new TopologySource({ initial, self: info, whoAmI, watch: opts.watch !== false, log });
  await source.resolve();
  const topology = () => source.topology;

  const tracing = await startTracing(info, initial.tracing, log);
  const security = createSecurity(topology, info, log);
  const cm = connectionManagerFor(topology(), security, opts, log);
  const store = await podStateFor(topology(), info, log).catch((e: unknown) => closeAndThrow(e, cm));
  const lag = saturationMonitor(log);
  const budgets = requestBudgets(lag);
  const { hedgeBudget, busyRetryBudget } = budgets;
  const metrics = brokerMetrics(info, cm, { hedgeBudget, busyRetryBudget }, topology);
  metrics.storeUp(store.kind, () => store.health().state === 'up');
  const catalog = await operationsCatalog(
    { topology, site: info.site, pod: info.pod, brokerId: info.id, metrics: metrics.backendMetrics() },
    opts.operations,
  ).catch((e: unknown) => closeAndThrow(e, cm, store));
  const { registry } = catalog;
  const deps = { self: info, topology, cm, registry, store, logger: log, metrics, sessions, ...budgets };
  const dispatcher = new Dispatcher(deps);
  const { admission, gate } = admissionFor(topology, metrics, security, log);
  const servers = new BrokerServers(info, log, topology().settings.maxMessageBytes);
  const status = () =>
    brokerStatus({
      ...{ info, topology: topology(), cm, hedgeBudget, started, store, admission },
      sessions: { opened: sessions && (() => sessions.stats()), served: () => servers.sessions?.size ?? 0 },
    });
  const brokerConsole = new BrokerConsole(topology);
  const port = await serveRpc(servers, {
    ...{ dispatcher, log, metrics, security, topology, sessions, admission, gate, faults: opts.faults },
    admin: { status, operations: () => listOperations(registry) },
    onCall: () => lag.busy(),
    onAggregate: brokerConsole.aggregateServed,
  }).catch((e: unknown) => closeAndThrow(e, cm, catalog, store, lag, admission));
  cm.setPeers(peerGroupsFor(topology(), info));
  const metricsServer = await httpListenerFor(opts.metricsAddress ?? info.metricsAddress, {
    ...{ metrics, status, security, topology },
    console: brokerConsole.routes({
      ...{ self: info, brokerId: info.id, grpcAddress: withPort(info.address, port) },
      ...{ security, status, topology, cm },
      operations: () => listOperations(registry),
    }),
  });
  servers.serving(true);
  lag.start();
  catalog.warm((message, fields) => log.warn(message, fields));
  logServing(log, info, port, topology().federation, metricsServer?.address);
  source.run((t) => {
    cm.setPeers(peerGroupsFor(t, info));
    admission.configureClients(t.clients);
    dispatcher.topologyChanged();
  });

  /** Health NOT_SERVING, no new calls, in-flight ones get `graceMs`, then everything closes. Once. */
  const close = stopOnce(log, async (graceMs) => {
    source.close();
    await servers.stop(graceMs);
    for (const part of [sessions, cm, catalog, brokerConsole]) part?.close();
    await metricsServer?.close();
    await store.close();
    lag.close();
    admission.close();
    await tracing.shutdown();
  });

  return {
    info,
    port,
    metricsPort: metricsServer?.port,
    httpUrl: metricsServer?.url,
    topology,
    reload: () => source.reload(),
    status,
    close,
  };
}

/** The connection manager of a broker: its peers' channels with the topology's keepalive and TLS settings. */
function connectionManagerFor(
  t: Topology,
  security: ReturnType<typeof createSecurity>,
  opts: BrokerOptions,
  log: Logger,
): ConnectionManager {
  const { settings } = t;
  return new ConnectionManager({
    warmPerTarget: settings.warmPerTarget,
    keepaliveTimeMs: settings.keepaliveTimeMs,
    keepaliveTimeoutMs: settings.keepaliveTimeoutMs,
    connectTimeoutMs: settings.connectTimeoutMs,
    credentials: security.channelCredentials,
    channelOptionsFor: (ep) => security.peerChannelOptions(ep.brokerId),
    channelOptions: {
      'grpc.max_receive_message_length': settings.maxMessageBytes,
      'grpc.max_send_message_length': settings.maxMessageBytes,
      // HTTP/2 flow control lets a peer send this much before it waits for a window update: one round
      // trip. At the default 64 KiB, an answer of a few hundred KiB (a session's stream, or one call) would
      // take several WAN round trips; a whole message fits now.
      'grpc-node.flow_control_window': settings.maxMessageBytes,
    },
    ...opts.connectionManager,
    logger: log,
  });
}

/**
 * The pod's store (see `store/open-state.ts`): a SQLite file shared with the pod's other brokers, or the
 * pod's PostgreSQL schema, migrated before serving when the database answers. A database newer than this
 * broker refuses the start; one that does not answer is logged and tried again at the first call that
 * needs it (its operations answer UNAVAILABLE meanwhile).
 */
async function podStateFor(t: Topology, info: BrokerInfo, log: Logger): Promise<PodState> {
  const storeLog = log.child({ component: 'store' });
  const state = openPodState(t, info, (e) => storeLog.warn('store connection lost', { error: e.message }));
  if (state instanceof PostgresPodState) {
    await state.migrate().then(
      () => storeLog.info('store ready', { store: state.where }),
      async (e: unknown) => {
        if (e instanceof SchemaTooNewError) {
          await state.close();
          throw e;
        }
        storeLog.warn('store unreachable at start; tried again at the first call', {
          store: state.where,
          error: (e as Error).message,
        });
      },
    );
  }
  return state;
}

/**
 * Event-loop lag, logged when the broker becomes (or stops being) saturated; started once it serves, and
 * measuring only while calls arrive (see {@link LoopLag.busy}). No hedges while the broker is saturated:
 * its answers are late from its own queueing, and a hedge would only add load (measured: default hedging
 * cost ~9% of saturated throughput without this).
 */
function saturationMonitor(log: Logger): LoopLag {
  return new LoopLag(undefined, (saturated, p90Ms) => {
    const fields = { eventLoopLagP90Ms: Math.round(p90Ms) };
    if (saturated) log.warn('broker saturated: hedging paused', fields);
    else log.info('broker no longer saturated: hedging resumed', fields);
  });
}

/** How this broker finds itself in a topology (and in each reload): by id, or as a DNS pod's replica. */
function selfFinder(opts: BrokerOptions): (t: Topology) => BrokerInfo {
  return (t) =>
    opts.pod ? dnsSelf(t, opts.pod.site, opts.pod.pod, opts.id, opts.listen) : findBroker(t, opts.id);
}

/** The line that says a broker serves: where, in which federation, with which metrics listener. */
function logServing(log: Logger, info: BrokerInfo, port: number, federation: string, metrics?: string): void {
  log.info('broker serving', {
    address: `${info.address.slice(0, info.address.lastIndexOf(':'))}:${port}`,
    wanAddress: info.wanAddress,
    federation,
    metrics,
  });
}

/** `address` (host:port) with another port (the one bound, for a listen address of port 0). */
const withPort = (address: string, port: number) => `${address.slice(0, address.lastIndexOf(':'))}:${port}`;

/** A stop that runs once, logged before and after; a later call gets the first one's promise. */
function stopOnce(log: Logger, stop: (graceMs: number) => Promise<void>) {
  let closing: Promise<void> | undefined;
  return (graceMs = DEFAULT_SHUTDOWN_GRACE_MS): Promise<void> =>
    (closing ??= (async () => {
      log.info('broker stopping', { graceMs });
      await stop(graceMs);
      log.info('broker stopped');
    })());
}

/** Closes what a failed start had opened, then rethrows its error. */
function closeAndThrow(e: unknown, ...opened: { close(): void }[]): never {
  for (const o of opened) o.close();
  throw e;
}

function requireFile(file: string | undefined): string {
  if (!file) throw new Error('startBroker needs topologyFile or topology');
  return file;
}

/** The HTTP listener of `/metrics`, `/status` and the console, when the broker has an address for it. */
async function httpListenerFor(
  address: string | undefined,
  parts: {
    metrics: BrokerMetrics;
    status: () => GetStatusResponse;
    console: HttpRoute | undefined;
    security: BrokerSecurity;
    topology: () => Topology;
  },
): Promise<{ address: string; port: number; url: string; close(): Promise<void> } | undefined> {
  if (!address) return undefined;
  const files = parts.security.tlsFiles;
  const server = await startHttpListener({
    address,
    registry: parts.metrics.registry,
    status: () => GetStatusResponse.toJSON(parts.status()),
    console: parts.console,
    tls: files && { ...files, refreshMs: parts.topology().security.refreshIntervalMs },
  });
  const host = address.slice(0, address.lastIndexOf(':'));
  const url = `${server.scheme}://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${server.port}/`;
  return { address, port: server.port, url, close: () => server.close() };
}
