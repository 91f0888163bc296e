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
import { ensureWarm, keepGroup, type ChannelKeeper } from './group-warmth';
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_FAILURE_THRESHOLD,
  DEFAULT_IDLE_RETIRE_MS,
  DEFAULT_KEEPALIVE_TIME_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  DEFAULT_MAINTENANCE_INTERVAL_MS,
  DEFAULT_MAX_CHANNEL_AGE_MS,
  DEFAULT_PROBE_INTERVAL_MS,
  DEFAULT_PROBE_TIMEOUT_MS,
  DEFAULT_RESET_TIMEOUT_MS,
  DEFAULT_WARM_PER_TARGET,
  MAX_WARM_PER_TARGET,
  grpcTarget,
  peerChannelOptions,
  type ConnectionManagerOptions,
} from './options';
import { downReason, evaluateTarget, targetName, type EndpointView } from './target-health';
import type {
  BreakerState,
  Connectivity,
  EndpointState,
  HealthRow,
  PeerEndpoint,
  PeerGroup,
  TargetHealth,
} from './types';

export { MAX_RETRY_AFTER_MS };

/** Why an endpoint whose connection attempt failed outright is down. */
const REASON_REFUSED = 'connection failed (refused or unreachable)';
/**
 * A target down this briefly with every connection refused (a broker restarting, a start-up race) is still
 * tried: a refusal costs no wait, and the iterator's one bounded reconnect wait finds a peer that is back.
 * Silence (a partition, a frozen process) fails fast at once: waiting is what it costs.
 */
export const REFUSED_GRACE_MS = 1_500;
/** Probe intervals vary by ±this share, so probes of many targets do not fire in lockstep. */
const PROBE_JITTER = 0.2;
/** A connect timeout doubles with each consecutive one, up to this many times the configured one. */
const MAX_CONNECT_TIMEOUT_FACTOR = 8;

interface Group {
  site: string;
  pod: string;
  addresses: string[];
  rotation: number;
  /** The target's health, re-evaluated on every endpoint transition (see {@link evaluateTarget}). */
  health: TargetHealth;
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
    Omit<
      ConnectionManagerOptions,
      'logger' | 'credentials' | 'channelOptions' | 'channelOptionsFor' | 'onTransition'
    >
  >;
  private readonly onTransition: ConnectionManagerOptions['onTransition'];
  private readonly channelOptionsFor: (endpoint: PeerEndpoint) => grpc.ChannelOptions;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly channelOptions: grpc.ChannelOptions;
  private maintenanceTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Endpoint transitions so far, by the state entered. */
  private readonly entered: Record<EndpointState, number> = {
    idle: 0,
    connecting: 0,
    ready: 0,
    reconnecting: 0,
    failing: 0,
    down: 0,
  };

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
      keepaliveTimeMs: options.keepaliveTimeMs ?? DEFAULT_KEEPALIVE_TIME_MS,
      keepaliveTimeoutMs: options.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      now: options.now ?? Date.now,
    };
    this.onTransition = options.onTransition;
    this.credentials = options.credentials ?? grpc.credentials.createInsecure();
    this.channelOptionsFor = options.channelOptionsFor ?? (() => ({}));
    this.channelOptions = { ...peerChannelOptions(this.opts), ...options.channelOptions };
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
        health: prev?.health ?? { site: g.site, pod: g.pod, state: 'up', since: this.opts.now(), reason: '' },
      });
      for (const ep of g.endpoints) {
        wanted.add(ep.address);
        const entry = this.entries.get(ep.address);
        if (entry) {
          entry.endpoint = { ...ep };
          entry.group = key;
          if (entry.retiring) {
            entry.retiring = false;
            this.log.info('endpoint re-added', { endpoint: ep.brokerId, address: ep.address });
          }
        } else {
          this.entries.set(ep.address, this.createEntry({ ...ep }, key));
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
   * breaker last (still tried if nothing else answers). `prefer` picks among the equal best ones.
   */
  order(target: TargetList, prefer?: (ep: Endpoint) => boolean): Endpoint[] {
    const group = this.groups.get(groupKey(target.site, target.pod));
    return rankEndpoints(
      target.endpoints.map((ep) => ({ ep, entry: this.entryFor(ep, target) })),
      (e) => this.tier(e),
      this.opts.now(),
      () => (group ? group.rotation++ : 0),
      prefer,
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

  /**
   * When every endpoint of `target` is down: since when (epoch ms) and why; undefined otherwise (including
   * for an endpoint never seen, which is presumed usable). A request reports such a target UNAVAILABLE at
   * once instead of waiting for attempt timeouts; background probes bring it back as soon as an endpoint
   * answers a health check.
   */
  targetDown(target: TargetList): { since: number; reason: string } | undefined {
    if (target.endpoints.length === 0) return undefined;
    const views: EndpointView[] = [];
    for (const ep of target.endpoints) {
      const e = this.entries.get(ep.address);
      if (!e || e.state !== 'down') return undefined;
      views.push(viewOf(e));
    }
    const group = this.groups.get(groupKey(target.site, target.pod));
    const since =
      group?.health.state === 'down' ? group.health.since : Math.max(...views.map((v) => v.stateSince));
    const refusedOnly = views.every((v) => v.stateReason === REASON_REFUSED);
    if (refusedOnly && this.opts.now() - since < REFUSED_GRACE_MS) return undefined;
    return { since, reason: downReason(views) };
  }

  /** Endpoint state transitions so far, by the state entered (for metrics). */
  transitionCounts(): Record<EndpointState, number> {
    return { ...this.entered };
  }

  /** The health of every target list the manager keeps (remote sites, other pods of this site). */
  targets(): TargetHealth[] {
    return [...this.groups.values()].map((g) => ({ ...g.health }));
  }

  /**
   * The endpoint's fastest usual answer in ms (the 5th percentile, or before a few answers the lowest
   * moving average of its group; undefined before any): about one round trip to it, for a sender to keep
   * back from the deadline it passes on.
   */
  latencyFloorMs(endpoint: Endpoint): number | undefined {
    const entry = this.entries.get(endpoint.address);
    const own = entry?.latency.quantileMs(0.05);
    if (own !== undefined || entry?.group === undefined) return own ?? entry?.latency.meanMs();
    // Too few answers from this one for a percentile: the lowest average of its twins (same link).
    let floor: number | undefined;
    for (const a of this.groups.get(entry.group)?.addresses ?? []) {
      const m = this.entries.get(a)?.latency.meanMs();
      if (m !== undefined && (floor === undefined || m < floor)) floor = m;
    }
    return floor;
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
      state: e.state,
      stateAgeMs: now - e.stateSince,
      stateReason: e.stateReason,
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

  // ---- endpoint state: every change goes through transition() ----

  /**
   * The one place an endpoint's state changes (like grpc-js's `subchannel.transitionToState`): records
   * since when and why, logs the change, notifies `onTransition`, starts probing an endpoint that is down,
   * searches its group for a live twin when it stops being usable, and re-evaluates its target.
   */
  private transition(entry: Entry, next: EndpointState, reason: string): void {
    const prev = entry.state;
    if (prev === next) {
      // Still down, for a new reason (e.g. refused, then silent): the target's reason follows.
      if (next === 'down' && reason !== entry.stateReason) {
        entry.stateReason = reason;
        if (entry.group !== undefined) this.refreshTarget(entry.group);
      }
      return;
    }
    entry.state = next;
    entry.stateSince = this.opts.now();
    entry.stateReason = reason;
    this.entered[next]++;
    const fields = { ...this.logFields(entry), from: prev, to: next, reason };
    if (next === 'down' || next === 'failing') this.log.warn(`endpoint ${next}`, fields);
    else if (prev === 'down' || prev === 'failing' || next === 'reconnecting')
      this.log.info(`endpoint ${next}`, fields);
    else this.log.debug(`endpoint ${next}`, fields);
    this.onTransition?.(entry.endpoint, prev, next, reason);
    if (next === 'down') this.startProbing(entry);
    if (entry.group === undefined) return;
    if (prev === 'ready' || next === 'down') this.warmGroup(entry.group);
    this.refreshTarget(entry.group);
  }

  /** Re-evaluates a group's target health after one of its endpoints changed state; logs a change. */
  private refreshTarget(key: string): void {
    const group = this.groups.get(key);
    if (!group) return;
    const views = this.groupEntries(group).map(viewOf);
    const prev = group.health;
    group.health = evaluateTarget(prev, views, this.opts.now());
    if (group.health.state === prev.state) return;
    const fields = { target: targetName(group), from: prev.state, to: group.health.state };
    if (group.health.state === 'down') {
      this.log.warn('target down: every endpoint unreachable; requests fail fast, probing', {
        ...fields,
        reason: group.health.reason,
      });
    } else if (prev.state === 'down') {
      this.log.info('target reachable again', { ...fields, downForMs: this.opts.now() - prev.since });
    }
  }

  /** A channel's connectivity changed: what it says of the endpoint. */
  private onConnectivity(entry: Entry, prev: Connectivity, next: Connectivity): void {
    if (next === 'ready' || next === 'transient-failure' || prev === 'ready') {
      this.log.debug(`channel ${next}`, { ...this.logFields(entry), from: prev });
    }
    switch (next) {
      case 'ready':
        this.clearConnectTimer(entry);
        entry.connectTimeouts = 0;
        if (entry.state === 'down') this.probeNow(entry);
        else if (entry.state === 'idle' || entry.state === 'connecting' || entry.state === 'reconnecting')
          this.transition(entry, entry.consecutiveFailures > 0 ? 'failing' : 'ready', 'connected');
        return;
      case 'connecting':
        this.armConnectTimer(entry);
        if (entry.state === 'idle') this.transition(entry, 'connecting', 'dialling');
        return;
      case 'idle':
        // A live connection lost: the reconnect's verdict comes within the connect timeout.
        if (prev !== 'ready' || entry.state === 'down') return;
        if (entry.state === 'ready') {
          this.transition(entry, 'reconnecting', 'connection lost (keepalive timeout, reset or GOAWAY)');
        }
        this.armConnectTimer(entry);
        return;
      case 'transient-failure':
        this.clearConnectTimer(entry);
        this.transition(entry, 'down', REASON_REFUSED);
        return;
      default:
        return;
    }
  }

  /**
   * grpc-js waits forever for a connection a silent peer accepted but never answers: after the connect
   * timeout (doubling with each one in a row) the endpoint is down and, if it is kept warm, dialled afresh.
   */
  private armConnectTimer(entry: Entry): void {
    if (entry.connectTimer) return;
    const client = entry.client;
    const factor = Math.min(MAX_CONNECT_TIMEOUT_FACTOR, 2 ** entry.connectTimeouts);
    const timeoutMs = this.opts.connectTimeoutMs * factor;
    entry.connectTimer = setTimeout(() => {
      entry.connectTimer = undefined;
      const stuck = entry.connectivity === 'connecting' || entry.connectivity === 'idle';
      if (entry.client !== client || !stuck || this.closed) return;
      entry.connectTimeouts++;
      // Silence is evidence only next to a link just seen to die (this endpoint's, or a twin's): a first
      // connection slowed by a busy start-up (a TLS handshake on a loaded machine) is just dialled again.
      if (this.lostLinkNear(entry)) {
        this.transition(
          entry,
          'down',
          `no connection within ${timeoutMs} ms (peer silent: partition or frozen?)`,
        );
      }
      this.retireChannel(entry, 'connect timed out');
      if (entry.warm && !entry.retiring) this.ensureClient(entry);
    }, timeoutMs);
    entry.connectTimer.unref();
  }

  /** True when the endpoint or a twin of its group lost its connection or is down: the link is suspect. */
  private lostLinkNear(entry: Entry): boolean {
    if (entry.state === 'reconnecting' || entry.state === 'down') return true;
    const group = entry.group === undefined ? undefined : this.groups.get(entry.group);
    return !!group && this.groupEntries(group).some((e) => e.state === 'reconnecting' || e.state === 'down');
  }

  private clearConnectTimer(entry: Entry): void {
    if (entry.connectTimer) clearTimeout(entry.connectTimer);
    entry.connectTimer = undefined;
  }

  /** A down endpoint's channel connected again: ask its health now rather than at the next probe tick. */
  private probeNow(entry: Entry): void {
    const client = entry.client;
    if (!client || this.closed) return;
    void entry.probe!.check(this.opts.probeTimeoutMs).then((serving) => {
      if (serving && entry.client === client && !this.closed) this.onProbeServing(entry);
    });
  }

  /**
   * A health check answered SERVING: an open breaker closes and the endpoint is eligible after its back-off.
   * The failures are not cleared (a peer may answer health yet fail every call): a `down` endpoint with
   * failures becomes `failing`, one without (its connection was lost) `ready`.
   */
  private onProbeServing(entry: Entry): void {
    entry.probeOkAt = this.opts.now();
    if (entry.breaker?.opened || entry.breaker?.halfOpen) entry.breaker.close();
    if (entry.state === 'down') {
      const next = entry.consecutiveFailures > 0 ? 'failing' : 'ready';
      this.transition(entry, next, 'health check answered SERVING');
    }
  }

  // ---- internals ----

  private createEntry(endpoint: PeerEndpoint, group?: string): Entry {
    const entry: Entry = {
      endpoint,
      group,
      client: undefined,
      probe: undefined,
      createdAt: 0,
      lastUsedAt: this.opts.now(),
      inFlight: 0,
      connectivity: 'none',
      state: 'idle',
      stateSince: this.opts.now(),
      stateReason: 'not used yet',
      connectTimeouts: 0,
      connectTimer: undefined,
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
    breaker.on('open', () =>
      this.transition(entry, 'down', `breaker open after ${entry.consecutiveFailures} failures in a row`),
    );
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
      const prev = entry.connectivity;
      if (next !== prev) {
        entry.connectivity = next;
        this.onConnectivity(entry, prev, next);
      }
      if (state === grpc.connectivityState.SHUTDOWN || entry.client !== client) return;
      // A warm channel whose connection dropped reconnects now, not at the next request, and so does any
      // channel that lost a live connection: the reconnect's verdict (ready, refused, or silent until the
      // connect timeout) says whether the peer is still there before a request has to pay for it.
      // (Asking to connect may change the state at once: that state is handled, not just watched from.)
      const reconnect = next === 'idle' && (entry.warm || prev === 'ready');
      const current = reconnect ? channel.getConnectivityState(true) : state;
      if (current !== state) return watch(current);
      channel.watchConnectivityState(state, Infinity, () => watch(channel.getConnectivityState(false)));
    };
    watch(channel.getConnectivityState(true));
    return client;
  }

  private closeEntry(entry: Entry): void {
    if (entry.probeTimer) clearTimeout(entry.probeTimer);
    entry.probeTimer = undefined;
    this.clearConnectTimer(entry);
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
    this.clearConnectTimer(entry);
    entry.probe?.close();
    entry.client.close();
    entry.client = undefined;
    entry.probe = undefined;
    entry.connectivity = 'none';
    // Nothing is known against an endpoint closed while usable: idle again. A down one stays down.
    if (entry.state === 'connecting' || entry.state === 'ready') this.transition(entry, 'idle', why);
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
    entry.consecutiveFailures = 0;
    this.transition(entry, 'ready', 'a call succeeded');
  }

  private onFailure(entry: Entry, err: unknown): void {
    entry.failures++;
    entry.consecutiveFailures++;
    entry.lastFailureAt = this.opts.now();
    if (entry.state !== 'down') {
      this.transition(entry, 'failing', `call failed: ${clipReason((err as Error).message)}`);
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
      const why = `lost to a hedge, then no health answer within ${this.opts.probeTimeoutMs} ms`;
      this.transition(entry, 'down', why);
      this.onFailure(entry, new Error(why));
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
      if (entry.state !== 'down' && entry.state !== 'failing') return;
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
      if (serving) return this.onProbeServing(entry);
      schedule();
    };
    const schedule = () => {
      const jitter = 1 - PROBE_JITTER + 2 * PROBE_JITTER * Math.random();
      entry.probeTimer = setTimeout(() => void tick(), this.opts.probeIntervalMs * jitter);
      entry.probeTimer.unref();
    };
    schedule();
  }

  /** The group's endpoints (those still in the topology). */
  private groupEntries(group: Group): Entry[] {
    return group.addresses.map((a) => this.entries.get(a)).filter((e): e is Entry => !!e && !e.retiring);
  }

  /** Warms what group `key` is missing now (see group-warmth.ts). */
  private warmGroup(key: string): void {
    const group = this.groups.get(key);
    if (group && !this.closed) ensureWarm(group, this.groupEntries(group), this.keeper, this.opts);
  }

  /** How group-warmth.ts opens, retires and probes channels. */
  private readonly keeper: ChannelKeeper = {
    tier: (e) => this.tier(e),
    open: (e) => void this.ensureClient(e),
    retire: (e, why) => this.retireChannel(e, why),
    probe: (e) => this.startProbing(e),
    note: (message, e) => this.log.debug(message, this.logFields(e)),
    now: () => this.opts.now(),
  };

  /** Periodic: warm what is missing, trim surplus warm channels, rotate old ones, retire idle ones. */
  private maintain(): void {
    if (this.closed) return;
    const now = this.opts.now();
    for (const g of this.groups.values()) keepGroup(g, this.groupEntries(g), this.keeper, this.opts);
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

/** What target health reads of an endpoint. */
function viewOf(e: Entry): EndpointView {
  return {
    brokerId: e.endpoint.brokerId,
    state: e.state,
    stateSince: e.stateSince,
    stateReason: e.stateReason,
  };
}

/** An error message short enough for a state reason. */
function clipReason(message: string): string {
  return message.length > 160 ? `${message.slice(0, 160)}…` : message;
}

function breakerState(b: CircuitBreaker): BreakerState {
  if (b.opened) return 'open';
  if (b.halfOpen) return 'half-open';
  return 'closed';
}
