import * as grpc from '@grpc/grpc-js';
import { FederationServiceClient, isPeerFailure, type Endpoint, type TargetList } from '@wanas/proto';
import CircuitBreaker from 'opossum';
import type { Logger } from 'winston';
import winston from 'winston';
import { createHealthProbe } from './health-probe';
import { LatencyWindow } from './latency-window';
import {
  MAX_RETRY_AFTER_MS,
  SLOW_CANCELLED_FACTOR,
  noteSlow,
  rankEndpoints,
  tierOf,
  type Entry,
} from './ordering';
import type { BreakerState, Connectivity, HealthRow, PeerEndpoint, PeerGroup } from './types';

export { MAX_RETRY_AFTER_MS };

/** Warm channels kept per target list (remote site or other pod) by default. */
export const DEFAULT_WARM_PER_TARGET = 1;
/**
 * The grpc-js target for a peer address: IP literals use the `ipv4:`/`ipv6:` resolvers, so a channel needs
 * no DNS resolver (a c-ares channel each); host names keep DNS.
 */
export function grpcTarget(address: string): string {
  if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(address)) return `ipv4:${address}`;
  if (/^\[[0-9a-fA-F:.]+\]:\d+$/.test(address)) return `ipv6:${address}`;
  return address;
}

/**
 * Failing channels a group keeps beyond `warmPerTarget` while it has no live endpoint: a dead site is
 * searched a few connections at a time (one more endpoint per maintenance tick), not by dialling every
 * broker it has at once.
 */
const SEARCH_EXTRA = 1;

/** Upper bound for `warmPerTarget`: a handful of WAN connections per site, never one per broker. */
export const MAX_WARM_PER_TARGET = 4;
/** Consecutive peer failures that open an endpoint's breaker. */
export const DEFAULT_FAILURE_THRESHOLD = 3;
/** Time an open breaker waits before letting one trial call through (the probe usually closes it first). */
export const DEFAULT_RESET_TIMEOUT_MS = 10_000;
/** Interval between grpc.health.v1 probes of a demoted endpoint. */
export const DEFAULT_PROBE_INTERVAL_MS = 500;
/** Deadline of one health probe. */
export const DEFAULT_PROBE_TIMEOUT_MS = 1_000;
/** Interval of the maintenance loop (warming, retiring, rotating). */
export const DEFAULT_MAINTENANCE_INTERVAL_MS = 1_000;
/** A channel not wanted warm and unused this long is closed. */
export const DEFAULT_IDLE_RETIRE_MS = 60_000;
/** A warm channel older than this is replaced by one to an equivalent endpoint (0 = never). */
export const DEFAULT_MAX_CHANNEL_AGE_MS = 0;
/** HTTP/2 keepalive ping interval on peer channels. */
export const DEFAULT_KEEPALIVE_TIME_MS = 10_000;
/** Time to wait for a keepalive ping's answer before the connection is declared dead. */
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 5_000;
/** Options of {@link ConnectionManager}; every field has a default. */
export interface ConnectionManagerOptions {
  /** Channel credentials for peers (default: insecure). */
  credentials?: grpc.ChannelCredentials;
  /** Extra grpc-js channel options (merged over the manager's keepalive and backoff options). */
  channelOptions?: grpc.ChannelOptions;
  /** Per-endpoint channel options (e.g. the TLS name the peer's certificate must carry). */
  channelOptionsFor?: (endpoint: PeerEndpoint) => grpc.ChannelOptions;
  /** Warm channels per target list (default 1, at most {@link MAX_WARM_PER_TARGET}). */
  warmPerTarget?: number;
  /** Consecutive failures that open a breaker (default 3). */
  failureThreshold?: number;
  /** opossum resetTimeout in ms (default 10 s). */
  resetTimeoutMs?: number;
  /** Probe interval in ms for demoted endpoints (default 500 ms). */
  probeIntervalMs?: number;
  /** Probe deadline in ms (default 1 s). */
  probeTimeoutMs?: number;
  /** Maintenance loop interval in ms (default 1 s). */
  maintenanceIntervalMs?: number;
  /** Idle time after which a channel that is not wanted warm is closed (default 60 s). */
  idleRetireMs?: number;
  /** Channel age after which a warm channel is rotated to an equivalent endpoint (default 0 = never). */
  maxChannelAgeMs?: number;
  /** Logger; the manager logs through `logger.child({ component: 'connection-manager' })`. */
  logger?: Logger;
  /** Clock (ms), injectable for tests. */
  now?: () => number;
}

interface Group {
  site: string;
  pod: string;
  addresses: string[];
  rotation: number;
}

const CONNECTIVITY: Record<grpc.connectivityState, Connectivity> = {
  [grpc.connectivityState.IDLE]: 'idle',
  [grpc.connectivityState.CONNECTING]: 'connecting',
  [grpc.connectivityState.READY]: 'ready',
  [grpc.connectivityState.TRANSIENT_FAILURE]: 'transient-failure',
  [grpc.connectivityState.SHUTDOWN]: 'shutdown',
};

function groupKey(site: string, pod: string): string {
  return `${site}/${pod}`;
}

/**
 * Keeps pre-established grpc-js channels to peer brokers warm, knows their health, and orders target
 * lists best first. One long-lived client per endpoint in use; one channel multiplexes every concurrent
 * call to that endpoint (HTTP/2), so a broker holds a handful of WAN connections per remote site.
 *
 * Health per endpoint = channel connectivity + an opossum breaker (its own timeout off: gRPC deadlines are
 * the only timers; caller errors do not count) opened after a few consecutive failures + a grpc.health.v1
 * probe while the endpoint is demoted, which restores it as soon as the peer answers SERVING.
 */
export class ConnectionManager {
  private readonly entries = new Map<string, Entry>();
  private readonly groups = new Map<string, Group>();
  private readonly log: Logger;
  private readonly opts: Required<
    Omit<ConnectionManagerOptions, 'logger' | 'credentials' | 'channelOptions' | 'channelOptionsFor'>
  >;
  private readonly channelOptionsFor: (endpoint: PeerEndpoint) => grpc.ChannelOptions;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly channelOptions: grpc.ChannelOptions;
  private maintenanceTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: ConnectionManagerOptions = {}) {
    const warm = options.warmPerTarget ?? DEFAULT_WARM_PER_TARGET;
    if (!Number.isInteger(warm) || warm < 1 || warm > MAX_WARM_PER_TARGET) {
      throw new RangeError(`warmPerTarget must be an integer from 1 to ${MAX_WARM_PER_TARGET}, got ${warm}`);
    }
    this.opts = {
      warmPerTarget: warm,
      failureThreshold: options.failureThreshold ?? DEFAULT_FAILURE_THRESHOLD,
      resetTimeoutMs: options.resetTimeoutMs ?? DEFAULT_RESET_TIMEOUT_MS,
      probeIntervalMs: options.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS,
      probeTimeoutMs: options.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS,
      maintenanceIntervalMs: options.maintenanceIntervalMs ?? DEFAULT_MAINTENANCE_INTERVAL_MS,
      idleRetireMs: options.idleRetireMs ?? DEFAULT_IDLE_RETIRE_MS,
      maxChannelAgeMs: options.maxChannelAgeMs ?? DEFAULT_MAX_CHANNEL_AGE_MS,
      now: options.now ?? Date.now,
    };
    this.credentials = options.credentials ?? grpc.credentials.createInsecure();
    this.channelOptionsFor = options.channelOptionsFor ?? (() => ({}));
    this.channelOptions = {
      'grpc.keepalive_time_ms': DEFAULT_KEEPALIVE_TIME_MS,
      'grpc.keepalive_timeout_ms': DEFAULT_KEEPALIVE_TIMEOUT_MS,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.initial_reconnect_backoff_ms': 200,
      // A peer that restarts is found within a second: a long backoff fails calls fast while it is back.
      'grpc.max_reconnect_backoff_ms': 1_000,
      // Our own channel per endpoint: retiring one never disturbs another manager's connection.
      'grpc.use_local_subchannel_pool': 1,
      // channelz keeps per-channel trace buffers and registry entries nobody reads here (memory per peer).
      'grpc.enable_channelz': 0,
      ...options.channelOptions,
    };
    this.log = (options.logger ?? winston.createLogger({ silent: true })).child({
      component: 'connection-manager',
    });
    this.maintenanceTimer = setInterval(() => this.maintain(), this.opts.maintenanceIntervalMs);
    this.maintenanceTimer.unref();
  }

  /**
   * Sets the target lists to keep warm (remote sites and other pods of this site). Endpoints that are new
   * are added and warmed as needed; endpoints no longer listed are retired once their in-flight calls end.
   * Call again with a changed topology: nothing restarts and no in-flight call is dropped.
   */
  setPeers(groups: PeerGroup[]): void {
    const wanted = new Set<string>();
    const nextGroups = new Map<string, Group>();
    for (const g of groups) {
      const key = groupKey(g.site, g.pod);
      const prev = this.groups.get(key);
      nextGroups.set(key, {
        site: g.site,
        pod: g.pod,
        addresses: g.endpoints.map((e) => e.address),
        rotation: prev?.rotation ?? 0,
      });
      for (const ep of g.endpoints) {
        wanted.add(ep.address);
        const entry = this.entries.get(ep.address);
        if (entry) {
          entry.endpoint = { ...ep };
          if (entry.retiring) {
            entry.retiring = false;
            this.log.info('endpoint re-added', { endpoint: ep.brokerId, address: ep.address });
          }
        } else {
          this.entries.set(ep.address, this.createEntry({ ...ep }));
        }
      }
    }
    for (const [address, entry] of this.entries) {
      if (!wanted.has(address) && !entry.retiring) {
        entry.retiring = true;
        entry.warm = false;
        this.log.info('endpoint removed from topology; retiring', {
          endpoint: entry.endpoint.brokerId,
          address,
        });
      }
    }
    this.groups.clear();
    for (const [k, g] of nextGroups) this.groups.set(k, g);
    this.maintain();
  }

  /**
   * The target list best first: warm and healthy endpoints first, by observed latency, rotating among
   * equals so load spreads; then healthy endpoints without a connection yet; then healthy endpoints that
   * answered far slower than usual lately; then endpoints that failed lately; endpoints with an open
   * breaker last (still tried if nothing else answers).
   */
  order(target: TargetList): Endpoint[] {
    const group = this.groups.get(groupKey(target.site, target.pod));
    return rankEndpoints(
      target.endpoints.map((ep) => ({ ep, entry: this.entryFor(ep, target) })),
      (e) => this.tier(e),
      this.opts.now(),
      () => (group ? group.rotation++ : 0),
    );
  }

  /** The long-lived client for an endpoint, created (and connected) on first use. */
  client(endpoint: Endpoint): FederationServiceClient {
    const entry = this.entryFor(endpoint);
    return this.ensureClient(entry);
  }

  /**
   * Runs one call to `endpoint` under its breaker and records the outcome (latency, failures, in flight).
   * An open breaker does not refuse the call (the iterator only gets here when nothing better is left);
   * a success through an open breaker closes it.
   */
  async track<R>(endpoint: Endpoint, run: () => Promise<R>): Promise<R> {
    const entry = this.entryFor(endpoint);
    entry.inFlight++;
    entry.calls++;
    entry.lastUsedAt = this.opts.now();
    const started = this.opts.now();
    const observed = async (): Promise<R> => {
      try {
        return await run();
      } catch (err) {
        // Cancelled by us after a long wait: another attempt (a hedge) answered first. Slow, or stuck?
        // (Checked even without a slow mark: an endpoint this broker has used too little to know its usual
        // latency can be frozen too, and would otherwise stay first in rotation.)
        if ((err as { code?: number }).code === grpc.status.CANCELLED) {
          this.noteSlow(entry, this.opts.now() - started, SLOW_CANCELLED_FACTOR);
          this.checkSuspect(entry);
        }
        throw err;
      }
    };
    try {
      const breaker = this.breakerOf(entry);
      if (breaker.closed) return (await breaker.fire(observed)) as R;
      try {
        const r = await observed();
        this.onSuccess(entry, this.opts.now() - started);
        breaker.close();
        return r;
      } catch (err) {
        const code = (err as { code?: number }).code;
        if (code !== undefined && isPeerFailure(code)) this.onFailure(entry, err);
        throw err;
      }
    } finally {
      entry.inFlight--;
    }
  }

  /** The endpoint's observed p95 latency in ms (undefined until it has answered a few calls). */
  latencyP95Ms(endpoint: Endpoint): number | undefined {
    return this.entries.get(endpoint.address)?.latency.quantileMs(0.95);
  }

  /** Waits until every group has a ready warm channel, or `timeoutMs` passes; resolves true when all are ready. */
  async waitForWarm(timeoutMs: number): Promise<boolean> {
    const until = this.opts.now() + timeoutMs;
    for (;;) {
      const ready = [...this.groups.values()].every((g) =>
        g.addresses.some((a) => this.entries.get(a)?.connectivity === 'ready'),
      );
      if (ready) return true;
      if (this.opts.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** The health table: one row per known endpoint. */
  snapshot(): HealthRow[] {
    const now = this.opts.now();
    return [...this.entries.values()].map((e) => ({
      brokerId: e.endpoint.brokerId,
      address: e.endpoint.address,
      site: e.endpoint.site,
      pod: e.endpoint.pod,
      connectivity: e.connectivity,
      breaker: e.breaker ? breakerState(e.breaker) : 'closed',
      consecutiveFailures: e.consecutiveFailures,
      latencyMs: e.latency.meanMs(),
      inFlight: e.inFlight,
      warm: e.warm,
      channelAgeMs: e.client ? now - e.createdAt : undefined,
      calls: e.calls,
      failures: e.failures,
    }));
  }

  /** Number of open channels (clients that exist and are not shut down). */
  openChannels(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.client) n++;
    return n;
  }

  /** Closes every channel and stops every timer. In-flight calls are cancelled by grpc-js. */
  close(): void {
    this.closed = true;
    if (this.maintenanceTimer) clearInterval(this.maintenanceTimer);
    for (const e of this.entries.values()) this.closeEntry(e);
    this.entries.clear();
  }

  // ---- internals ----

  private createEntry(endpoint: PeerEndpoint): Entry {
    const entry: Entry = {
      endpoint,
      client: undefined,
      probe: undefined,
      createdAt: 0,
      lastUsedAt: this.opts.now(),
      inFlight: 0,
      connectivity: 'none',
      breaker: undefined,
      consecutiveFailures: 0,
      lastFailureAt: 0,
      probeOkAt: 0,
      lastProbeStartAt: 0,
      slowAt: 0,
      latency: new LatencyWindow(),
      warm: false,
      retiring: false,
      probeTimer: undefined,
      suspectCheck: false,
      calls: 0,
      failures: 0,
    };
    return entry;
  }

  /** The endpoint's opossum breaker, created on first use. */
  private breakerOf(entry: Entry): CircuitBreaker {
    if (entry.breaker) return entry.breaker;
    const breaker = new CircuitBreaker((run: () => Promise<unknown>) => run(), {
      timeout: false,
      resetTimeout: this.opts.resetTimeoutMs,
      errorThresholdPercentage: 50,
      volumeThreshold: 10,
      // Caller errors (INVALID_ARGUMENT, NOT_FOUND, ...) are answers, not peer failures.
      errorFilter: (err: { code?: number }) => err.code === undefined || !isPeerFailure(err.code),
    });
    breaker.on('success', (result: unknown, latencyMs: number) => {
      // A filtered error (caller's mistake) still proves the peer is alive, but says nothing of latency.
      const isError = result instanceof Error;
      // A call we cancelled (a hedge answered first, the caller gave up) proves nothing either way: counted
      // as a success it cleared the failures of a frozen peer, which then came back first in rotation.
      if (isError && (result as { code?: number }).code === grpc.status.CANCELLED) return;
      this.onSuccess(entry, isError ? undefined : latencyMs);
    });
    breaker.on('failure', (err: unknown) => this.onFailure(entry, err));
    breaker.on('open', () => {
      this.log.warn('breaker open: endpoint demoted, probing', this.logFields(entry));
      this.startProbing(entry);
      this.ensureWarm(entry.endpoint.site, entry.endpoint.pod);
    });
    breaker.on('halfOpen', () => this.log.info('breaker half-open', this.logFields(entry)));
    breaker.on('close', () => this.log.info('breaker closed: endpoint healthy again', this.logFields(entry)));
    entry.breaker = breaker;
    return breaker;
  }

  private entryFor(ep: Endpoint, target?: TargetList): Entry {
    let entry = this.entries.get(ep.address);
    if (!entry) {
      entry = this.createEntry({
        brokerId: ep.brokerId,
        address: ep.address,
        site: target?.site ?? '',
        pod: target?.pod ?? '',
      });
      // Not in any warm group: used on demand and retired when idle.
      this.entries.set(ep.address, entry);
    }
    return entry;
  }

  private ensureClient(entry: Entry): FederationServiceClient {
    if (this.closed) throw new Error('connection manager is closed');
    if (entry.client) return entry.client;
    const client = new FederationServiceClient(grpcTarget(entry.endpoint.address), this.credentials, {
      ...this.channelOptions,
      ...this.channelOptionsFor(entry.endpoint),
    });
    entry.client = client;
    entry.createdAt = this.opts.now();
    entry.probe = createHealthProbe(client.getChannel());
    const channel = client.getChannel();
    const watch = (state: grpc.connectivityState) => {
      if (entry.client !== client) return; // a closed channel's last words say nothing of the endpoint
      const next = CONNECTIVITY[state];
      if (next !== entry.connectivity) {
        const prev = entry.connectivity;
        entry.connectivity = next;
        if (next === 'ready' || next === 'transient-failure' || prev === 'ready') {
          this.log.info(`channel ${next}`, { ...this.logFields(entry), from: prev });
        }
        if (next === 'transient-failure') {
          this.startProbing(entry);
          this.ensureWarm(entry.endpoint.site, entry.endpoint.pod);
        }
      }
      if (state === grpc.connectivityState.SHUTDOWN || entry.client !== client) return;
      // A warm channel whose connection dropped reconnects now, not at the next request: a dead peer is
      // found (refused → transient failure → a twin is warmed) before any request has to pay for it.
      const current = next === 'idle' && entry.warm ? channel.getConnectivityState(true) : state;
      channel.watchConnectivityState(current, Infinity, () => watch(channel.getConnectivityState(false)));
    };
    watch(channel.getConnectivityState(true));
    return client;
  }

  private closeEntry(entry: Entry): void {
    if (entry.probeTimer) clearTimeout(entry.probeTimer);
    entry.probeTimer = undefined;
    entry.breaker?.shutdown();
    if (entry.client) {
      entry.probe?.close();
      entry.client.close();
      entry.client = undefined;
      entry.probe = undefined;
      entry.connectivity = 'none';
    }
  }

  private retireChannel(entry: Entry, why: string): void {
    if (!entry.client) return;
    this.log.info(`channel retired (${why})`, this.logFields(entry));
    entry.probe?.close();
    entry.client.close();
    entry.client = undefined;
    entry.probe = undefined;
    entry.connectivity = 'none';
  }

  /** The endpoint's health tier now (see {@link tierOf}). */
  private tier(entry: Entry): number {
    return tierOf(entry, this.opts.probeIntervalMs, this.opts.now());
  }

  /** Marks the endpoint slow when `ms` is far above its usual latency (see {@link noteSlow}). */
  private noteSlow(entry: Entry, ms: number, factor?: number): void {
    noteSlow(entry, ms, this.opts.now(), factor);
  }

  private onSuccess(entry: Entry, latencyMs: number | undefined): void {
    if (latencyMs !== undefined) {
      this.noteSlow(entry, latencyMs);
      entry.latency.add(latencyMs);
    }
    if (entry.consecutiveFailures > 0) {
      this.log.info('endpoint recovered', { ...this.logFields(entry), after: entry.consecutiveFailures });
    }
    entry.consecutiveFailures = 0;
  }

  private onFailure(entry: Entry, err: unknown): void {
    entry.failures++;
    entry.consecutiveFailures++;
    entry.lastFailureAt = this.opts.now();
    if (entry.consecutiveFailures === 1) {
      this.log.warn('endpoint failing: ordered after healthy twins', {
        ...this.logFields(entry),
        error: (err as Error).message,
      });
    }
    this.startProbing(entry);
    if (entry.consecutiveFailures >= this.opts.failureThreshold && !entry.breaker?.opened)
      this.breakerOf(entry).open();
  }

  /**
   * An endpoint that just lost to a hedge after a long wait may be slow (a heavy tail: it stays ordered
   * after its twins for a while) or stuck (a frozen process, which answers nothing: without this it
   * would come back into rotation when the slow mark expires and cost a hedge delay each time). One
   * health check tells them apart: no SERVING answer within the probe timeout counts as a failure, and
   * the endpoint is probed until it answers again.
   */
  private checkSuspect(entry: Entry): void {
    const client = entry.client;
    if (entry.suspectCheck || !client || this.closed) return;
    entry.suspectCheck = true;
    void entry.probe!.check(this.opts.probeTimeoutMs).then((serving) => {
      entry.suspectCheck = false;
      if (serving || entry.client !== client || this.closed) return;
      this.onFailure(
        entry,
        new Error(`lost to a hedge, then no health answer within ${this.opts.probeTimeoutMs} ms`),
      );
    });
  }

  /**
   * Probes a demoted endpoint with grpc.health.v1 until it answers SERVING. A SERVING answer closes an
   * open breaker and makes the endpoint eligible after its back-off; it does not clear the failures:
   * only a real call that succeeds does (a peer may answer health yet fail every call).
   */
  private startProbing(entry: Entry): void {
    if (entry.probeTimer || this.closed) return;
    const tick = async () => {
      entry.probeTimer = undefined;
      if (this.closed || entry.retiring) return;
      const demoted =
        entry.breaker?.opened || entry.consecutiveFailures > 0 || entry.connectivity === 'transient-failure';
      if (!demoted) return;
      // Closed while failing (a dead group's search moved on): probed again once warmed or used.
      if (!entry.client && !entry.warm) return;
      // While grpc-js is (re)connecting on its own back-off a probe could only fail: wait for a connection.
      if (
        entry.client &&
        (entry.connectivity === 'transient-failure' || entry.connectivity === 'connecting')
      ) {
        schedule();
        return;
      }
      const client = this.ensureClient(entry);
      const serving = await entry.probe!.check(this.opts.probeTimeoutMs).catch(() => false);
      if (entry.client !== client) return;
      if (serving) {
        entry.probeOkAt = this.opts.now();
        if (entry.breaker?.opened || entry.breaker?.halfOpen) entry.breaker.close();
        return;
      }
      schedule();
    };
    const schedule = () => {
      entry.probeTimer = setTimeout(() => void tick(), this.opts.probeIntervalMs);
      entry.probeTimer.unref();
    };
    schedule();
  }

  /** Keeps `warmPerTarget` healthy warm channels in the group of (site, pod). */
  private ensureWarm(site: string, pod: string): void {
    const group = this.groups.get(groupKey(site, pod));
    if (!group || this.closed) return;
    const entries = group.addresses
      .map((a) => this.entries.get(a))
      .filter((e): e is Entry => !!e && !e.retiring);
    const healthyWarm = entries.filter((e) => e.warm && this.tier(e) <= 1);
    let missing = this.opts.warmPerTarget - healthyWarm.length;
    if (missing <= 0) return;
    const failingWarm = entries.filter((e) => e.warm && this.tier(e) > 1).length;
    let searchBudget = this.opts.warmPerTarget + SEARCH_EXTRA - failingWarm;
    const candidates = entries
      .filter((e) => !e.warm && this.tier(e) <= 1)
      .sort((a, b) => this.tier(a) - this.tier(b));
    // Start from a rotating offset so brokers of many sources spread over the group's endpoints.
    const offset = candidates.length ? group.rotation++ % candidates.length : 0;
    const rotated = [...candidates.slice(offset), ...candidates.slice(0, offset)];
    for (const e of rotated) {
      if (missing <= 0 || searchBudget <= 0) break;
      e.warm = true;
      this.ensureClient(e);
      this.log.debug('warming channel', this.logFields(e));
      missing--;
      searchBudget--;
    }
    // Nothing healthy left to warm: keep `warmPerTarget` failing ones reconnecting with back-off (which
    // ones rotates, see maintain()), so the group is found again when it comes back.
    if (candidates.length === 0) {
      let keep = this.opts.warmPerTarget - failingWarm;
      const idle = entries.filter((e) => !e.warm);
      const from = idle.length ? group.rotation++ % idle.length : 0;
      for (const e of [...idle.slice(from), ...idle.slice(0, from)]) {
        if (keep <= 0) break;
        e.warm = true;
        this.ensureClient(e);
        keep--;
      }
    }
  }

  /**
   * A group with no live endpoint and its search budget spent: the failing warm channel that failed
   * first gives its place to another endpoint (one per maintenance tick), and closes.
   */
  private searchDeadGroup(entries: Entry[]): void {
    if (entries.some((e) => e.warm && this.tier(e) <= 1)) return;
    const failing = entries.filter((e) => e.warm && this.tier(e) > 1);
    if (failing.length < this.opts.warmPerTarget || failing.length === entries.length) return;
    const oldest = failing.reduce((a, b) => (b.lastFailureAt < a.lastFailureAt ? b : a));
    oldest.warm = false;
    if (oldest.inFlight === 0) this.retireChannel(oldest, 'searching the group for a live endpoint');
    const site = oldest.endpoint.site;
    const pod = oldest.endpoint.pod;
    this.ensureWarm(site, pod);
  }

  /**
   * At most `warmPerTarget` + {@link SEARCH_EXTRA} channels per group to endpoints that are failing:
   * those not warm and idle beyond that close (the oldest failure first), so a site or pod that is down
   * costs a few reconnecting channels, not one per broker. A free slot re-admits one closed failing
   * endpoint per tick (its channel reconnects and is probed), so endpoints that recover rejoin.
   */
  private boundFailing(entries: Entry[]): void {
    const cap = this.opts.warmPerTarget + SEARCH_EXTRA;
    const failing = entries.filter((e) => e.client && this.tier(e) > 1);
    const closable = failing
      .filter((e) => !e.warm && e.inFlight === 0)
      .sort((a, b) => a.lastFailureAt - b.lastFailureAt);
    let excess = failing.length - cap;
    for (const e of closable) {
      if (excess <= 0) break;
      this.retireChannel(e, 'failing; probed again in turn');
      excess--;
    }
    if (excess < 0) {
      const waiting = entries.filter((e) => !e.client && this.tier(e) > 1);
      const next = waiting.sort((a, b) => a.lastProbeStartAt - b.lastProbeStartAt)[0];
      if (next) {
        next.lastProbeStartAt = this.opts.now();
        this.ensureClient(next);
        this.startProbing(next);
      }
    }
  }

  /** Periodic: warm what is missing, trim surplus warm channels, rotate old ones, retire idle ones. */
  private maintain(): void {
    if (this.closed) return;
    const now = this.opts.now();
    for (const g of this.groups.values()) {
      const entries = g.addresses
        .map((a) => this.entries.get(a))
        .filter((e): e is Entry => !!e && !e.retiring);
      // Age rotation: move the warm role to an equivalent endpoint; the old channel retires when idle.
      if (this.opts.maxChannelAgeMs > 0 && entries.length > 1) {
        for (const e of entries) {
          if (e.warm && e.client && now - e.createdAt > this.opts.maxChannelAgeMs) {
            e.warm = false;
            this.log.info('channel aged out: rotating to an equivalent endpoint', this.logFields(e));
          }
        }
      }
      this.ensureWarm(g.site, g.pod);
      this.searchDeadGroup(entries);
      this.boundFailing(entries);
      // Trim surplus: more healthy warm channels than wanted (e.g. after a failed one recovered).
      const healthyWarm = entries.filter((e) => e.warm && this.tier(e) <= 1);
      for (const e of healthyWarm.slice(this.opts.warmPerTarget)) e.warm = false;
      // A failing warm channel stays warm only while no healthy twin is.
      if (healthyWarm.length >= this.opts.warmPerTarget) {
        for (const e of entries) if (e.warm && this.tier(e) > 1) e.warm = false;
      }
    }
    for (const [address, e] of this.entries) {
      if (e.inFlight > 0 || !e.client) continue;
      if (e.retiring) {
        this.closeEntry(e);
        this.entries.delete(address);
        this.log.info('endpoint retired', this.logFields(e));
      } else if (!e.warm && now - e.lastUsedAt > this.opts.idleRetireMs) {
        this.retireChannel(e, 'idle');
      } else if (!e.warm && this.opts.maxChannelAgeMs > 0 && now - e.createdAt > this.opts.maxChannelAgeMs) {
        this.retireChannel(e, 'aged');
      }
    }
  }

  private logFields(entry: Entry): Record<string, unknown> {
    return {
      endpoint: entry.endpoint.brokerId,
      address: entry.endpoint.address,
      site: entry.endpoint.site,
      pod: entry.endpoint.pod,
    };
  }
}

function breakerState(b: CircuitBreaker): BreakerState {
  if (b.opened) return 'open';
  if (b.halfOpen) return 'half-open';
  return 'closed';
}
