import * as grpc from '@grpc/grpc-js';
import { ConnectionManager, type ConnectionManagerOptions, type PeerGroup } from '@wanas/connection-manager';
import { HedgeBudget } from '@wanas/iterator';
import { LoopLag } from './loop-lag';
import { GetStatusResponse, msToDuration } from '@wanas/proto';
import { HealthImplementation } from 'grpc-health-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'winston';
import { Dispatcher } from './dispatcher';
import { createLogger } from './logger';
import { BrokerMetrics, startMetricsServer } from './metrics';
import { builtinOperations } from './operations/builtin';
import type { OperationRegistry } from './operations/registry';
import { addReflection } from './reflection';
import { createSecurity } from './security';
import { SERVER_OPTIONS, createHandlers, type FaultInjection } from './server';
import { PodStore } from './store/pod-store';
import { DnsDiscovery } from './discovery';
import {
  dataDirOf,
  dnsSelf,
  findBroker,
  podOf,
  loadTopology,
  withDiscovered,
  type BrokerInfo,
  type Topology,
} from './topology';

/** Grace period for in-flight calls at shutdown, ms. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
/** Debounce of topology file changes, ms. */
const TOPOLOGY_WATCH_DEBOUNCE_MS = 200;

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
  /** Operations (default: the built-in ones). */
  operations?: OperationRegistry;
  /** Overrides of the connection manager's options. */
  connectionManager?: Omit<ConnectionManagerOptions, 'logger'>;
  /** host:port for /metrics and /status (default: the topology's `metricsAddress`, else none). */
  metricsAddress?: string;
  /** Faults to inject on purpose (tests and benchmarks only; the broker logs a warning). */
  faults?: FaultInjection;
}

/** A running broker. */
export interface BrokerHandle {
  readonly info: BrokerInfo;
  /** The port the gRPC server listens on. */
  readonly port: number;
  /** The port of /metrics and /status, when served. */
  readonly metricsPort: number | undefined;
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

/** Starts one broker: gRPC server (aggregation, federation, health, reflection), warm peer channels, metrics. */
export async function startBroker(opts: BrokerOptions): Promise<BrokerHandle> {
  let fileTopology = opts.topology ?? loadTopology(requireFile(opts.topologyFile));
  const whoAmI = (t: Topology): BrokerInfo =>
    opts.pod ? dnsSelf(t, opts.pod.site, opts.pod.pod, opts.id, opts.listen) : findBroker(t, opts.id);
  const info = whoAmI(fileTopology);
  const baseLogger = opts.logger ?? createLogger();
  const log = baseLogger.child({ broker: info.id, site: info.site, pod: info.pod });
  const started = Date.now();

  // Pods given as dns:///NAME:PORT: resolved once before serving, then every dnsRefreshMs.
  const hasDns = (t: Topology) => t.sites.some((s) => s.pods.some((p) => p.dns));
  const discovery = new DnsDiscovery(fileTopology.settings.dnsServers, log.child({ component: 'discovery' }));
  if (hasDns(fileTopology)) await discovery.refresh(fileTopology);
  let topology = withDiscovered(fileTopology, discovery.discovered);

  const security = createSecurity(() => topology, info, log);
  const cm = new ConnectionManager({
    warmPerTarget: topology.settings.warmPerTarget,
    keepaliveTimeMs: topology.settings.keepaliveTimeMs,
    keepaliveTimeoutMs: topology.settings.keepaliveTimeoutMs,
    connectTimeoutMs: topology.settings.connectTimeoutMs,
    credentials: security.channelCredentials,
    channelOptionsFor: (ep) => security.peerChannelOptions(ep.brokerId),
    ...opts.connectionManager,
    logger: log,
  });
  const store = new PodStore(
    path.join(dataDirOf(topology), `${info.site}.${info.pod}.sqlite`),
    info.site,
    info.pod,
    topology.settings.idempotencyWindowMs,
    podOf(topology, info.site, info.pod)?.pools,
  );
  const metrics = new BrokerMetrics({ broker: info.id, site: info.site, pod: info.pod }, cm);
  // No hedges while this broker is saturated: its answers are late from its own queueing, and a hedge
  // would only add load (measured: default hedging cost ~9% of saturated throughput without this).
  // Measured from the moment the broker serves: start-up work blocks the loop and says nothing of load.
  const lag: { monitor?: LoopLag } = {};
  const hedgeBudget = new HedgeBudget(
    undefined,
    undefined,
    undefined,
    () => lag.monitor?.saturated() ?? false,
  );
  const dispatcher = new Dispatcher({
    self: info,
    topology: () => topology,
    cm,
    registry: opts.operations ?? builtinOperations(),
    store,
    logger: log,
    metrics,
    hedgeBudget,
  });

  const server = new grpc.Server(SERVER_OPTIONS);
  const health = new HealthImplementation({
    '': 'NOT_SERVING',
    'wanas.v1.AggregationService': 'NOT_SERVING',
    'wanas.v1.FederationService': 'NOT_SERVING',
  });
  health.addToServer(server);
  createHandlers(
    dispatcher,
    log.child({ component: 'server' }),
    metrics,
    () => status(),
    security,
    () => topology.settings,
    opts.faults,
  ).addTo(server);
  addReflection(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(info.address, security.serverCredentials, (e, p) => (e ? reject(e) : resolve(p))),
  ).catch((e: Error) => {
    cm.close();
    store.close();
    throw new Error(`broker ${info.id} cannot listen on ${info.address}: ${e.message}`);
  });

  cm.setPeers(peerGroupsFor(topology, info));
  const status = (): GetStatusResponse => ({
    broker: {
      id: info.id,
      site: info.site,
      pod: info.pod,
      address: info.address,
      wanAddress: info.wanAddress,
    },
    federation: topology.federation,
    uptime: msToDuration(Date.now() - started),
    sites: topology.sites.map((s) => ({
      name: s.name,
      pods: s.pods.map((p) => ({ name: p.name, brokerIds: p.brokers.map((b) => b.id) })),
    })),
    channels: cm.snapshot().map((r) => ({
      brokerId: r.brokerId,
      address: r.address,
      site: r.site,
      pod: r.pod,
      connectivity: r.connectivity,
      breaker: r.breaker,
      consecutiveFailures: r.consecutiveFailures,
      latency: r.latencyMs === undefined ? undefined : msToDuration(r.latencyMs),
      inFlight: r.inFlight,
      warm: r.warm,
      age: r.channelAgeMs === undefined ? undefined : msToDuration(r.channelAgeMs),
      calls: r.calls,
      failures: r.failures,
      state: r.state,
      stateAge: msToDuration(r.stateAgeMs),
      stateReason: r.stateReason,
    })),
    targets: cm.targets().map((t) => ({
      site: t.site,
      pod: t.pod,
      state: t.state,
      stateAge: msToDuration(Date.now() - t.since),
      reason: t.reason,
    })),
    hedgeRequests: hedgeBudget.stats().requests,
    hedges: hedgeBudget.stats().hedges,
  });
  // Kubernetes probes speak plaintext: health (and only health) on its own port when asked for.
  let healthServer: grpc.Server | undefined;
  if (info.healthAddress) {
    healthServer = new grpc.Server();
    health.addToServer(healthServer);
    const hs = healthServer;
    await new Promise<number>((resolve, reject) =>
      hs.bindAsync(info.healthAddress!, grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    ).catch((e: Error) => {
      server.forceShutdown();
      cm.close();
      store.close();
      throw new Error(`broker ${info.id} cannot serve health on ${info.healthAddress}: ${e.message}`);
    });
  }
  const metricsAddress = opts.metricsAddress ?? info.metricsAddress;
  const metricsServer = metricsAddress
    ? await startMetricsServer(metricsAddress, metrics, () => GetStatusResponse.toJSON(status()))
    : undefined;

  for (const svc of ['', 'wanas.v1.AggregationService', 'wanas.v1.FederationService'])
    health.setStatus(svc, 'SERVING');
  lag.monitor = new LoopLag(undefined, (saturated, p90Ms) => {
    const fields = { eventLoopLagP90Ms: Math.round(p90Ms) };
    if (saturated) log.warn('broker saturated: hedging paused', fields);
    else log.info('broker no longer saturated: hedging resumed', fields);
  });
  log.info('broker serving', {
    address: `${info.address.slice(0, info.address.lastIndexOf(':'))}:${port}`,
    wanAddress: info.wanAddress,
    federation: topology.federation,
    metrics: metricsServer ? metricsAddress : undefined,
  });

  let dnsTimer: NodeJS.Timeout | undefined;
  let dnsRound: Promise<void> | undefined;
  /** One DNS round (never two at once); applies a changed target list live. */
  const rediscover = (): Promise<void> =>
    (dnsRound ??= (async () => {
      try {
        if (hasDns(fileTopology) && (await discovery.refresh(fileTopology))) {
          topology = withDiscovered(fileTopology, discovery.discovered);
          cm.setPeers(peerGroupsFor(topology, info));
        }
      } catch (e) {
        log.error('DNS discovery round failed', { error: (e as Error).message });
      } finally {
        dnsRound = undefined;
      }
    })());
  const scheduleDns = () => {
    if (!hasDns(fileTopology) || closing) return;
    dnsTimer = setTimeout(() => void rediscover().finally(scheduleDns), fileTopology.settings.dnsRefreshMs);
    dnsTimer.unref();
  };

  const reload = (): boolean => {
    if (!fileTopology.file) return false;
    try {
      const next = loadTopology(fileTopology.file);
      const me = whoAmI(next);
      if (me.site !== info.site || me.pod !== info.pod || me.address !== info.address) {
        throw new Error(`broker ${info.id} moved (site/pod/address changed); restart it to apply that`);
      }
      if (JSON.stringify(next.settings.dnsServers) !== JSON.stringify(fileTopology.settings.dnsServers))
        log.warn('settings.dnsServers changed; that applies at the next restart');
      const hadDns = hasDns(fileTopology);
      fileTopology = next;
      topology = withDiscovered(fileTopology, discovery.discovered);
      cm.setPeers(peerGroupsFor(topology, info));
      if (hasDns(next)) void rediscover();
      if (!hadDns) scheduleDns();
      log.info('topology reloaded', { sites: topology.sites.length, brokers: topology.brokers.size });
      return true;
    } catch (e) {
      log.error('topology change refused; keeping the current one', { error: (e as Error).message });
      return false;
    }
  };

  let watcher: fs.FSWatcher | undefined;
  if (fileTopology.file && opts.watch !== false) {
    let timer: NodeJS.Timeout | undefined;
    const file = fileTopology.file;
    watcher = fs.watch(path.dirname(file), (_event, name) => {
      if (name !== path.basename(file)) return;
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => reload(), TOPOLOGY_WATCH_DEBOUNCE_MS);
      timer.unref();
    });
    watcher.unref();
  }

  let closing: Promise<void> | undefined;
  const close = (graceMs = DEFAULT_SHUTDOWN_GRACE_MS): Promise<void> => {
    closing ??= (async () => {
      log.info('broker stopping', { graceMs });
      if (dnsTimer) clearTimeout(dnsTimer);
      for (const svc of ['', 'wanas.v1.AggregationService', 'wanas.v1.FederationService'])
        health.setStatus(svc, 'NOT_SERVING');
      watcher?.close();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          log.warn('grace period over; cancelling calls still in flight');
          server.forceShutdown();
          resolve();
        }, graceMs);
        force.unref();
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      cm.close();
      healthServer?.forceShutdown();
      await metricsServer?.close();
      store.close();
      lag.monitor?.close();
      log.info('broker stopped');
    })();
    return closing;
  };

  scheduleDns();
  return { info, port, metricsPort: metricsServer?.port, topology: () => topology, reload, status, close };
}

function requireFile(file: string | undefined): string {
  if (!file) throw new Error('startBroker needs topologyFile or topology');
  return file;
}
