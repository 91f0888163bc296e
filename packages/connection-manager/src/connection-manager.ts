import * as grpc from '@grpc/grpc-js';
import { FederationServiceClient, isPeerFailure, type Endpoint, type TargetList } from '@wanas/proto';
import type CircuitBreaker from 'opossum';
import type { Logger } from 'winston';
import winston from 'winston';
import { RTT_HEDGE_SLACK_MS, floorMs, p95Ms } from './latency-estimates';
import { dropChannel, openChannel } from './peer-channel';
import { EndpointHealth, REASON_REFUSED, logFields, viewOf, type Group } from './endpoint-health';
import {
  MAX_RETRY_AFTER_MS,
  SLOW_CANCELLED_FACTOR,
  TIGHT_BUDGET_FACTOR,
  isInconclusive,
  markInconclusive,
  newEntry,
  rankEndpoints,
  tierOf,
  type Entry,
} from './ordering';
import { ensureWarm, keepGroup, type ChannelKeeper } from './group-warmth';
import {
  grpcTarget,
  peerChannelOptions,
  settingsOf,
  type ConnectionManagerOptions,
  type ManagerSettings,
} from './options';
import { downReason, type EndpointView } from './target-health';
import type { BreakerState, EndpointState, HealthRow, PeerEndpoint, PeerGroup, TargetHealth } from './types';

export { MAX_RETRY_AFTER_MS, RTT_HEDGE_SLACK_MS };

/**
 * A target down this briefly with every connection refused (a broker restarting, a start-up race) is still
 * tried: a refusal costs no wait, and the iterator's one bounded reconnect wait finds a peer that is back.
 * Silence (a partition, a frozen process) fails fast at once: waiting is what it costs.
 */
export const REFUSED_GRACE_MS = 1_500;
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
  private readonly opts: ManagerSettings;
  /** The endpoints' health state machine (transitions, breakers, probes, connect timeouts). */
  private readonly health: EndpointHealth;
  private readonly channelOptionsFor: (endpoint: PeerEndpoint) => grpc.ChannelOptions;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly channelOptions: grpc.ChannelOptions;
  private maintenanceTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: ConnectionManagerOptions = {}) {
    this.opts = settingsOf(options);
    this.credentials = options.credentials ?? grpc.credentials.createInsecure();
    this.channelOptionsFor = options.channelOptionsFor ?? (() => ({}));
    this.channelOptions = { ...peerChannelOptions(this.opts), ...options.channelOptions };
    this.log = (options.logger ?? winston.createLogger({ silent: true })).child({
      component: 'connection-manager',
    });
    this.health = new EndpointHealth(this.opts, this.log, this.healthHost, options.onTransition);
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
   * a success through an open breaker closes it. `timeoutMs`, the attempt's own timeout: a
   * DEADLINE_EXCEEDED within one shorter than {@link TIGHT_BUDGET_FACTOR} × the endpoint's fastest usual
   * answer (about a round trip) is the caller's budget running out (a loaded federation's last hops get
   * little time), not the peer failing; it is not counted, and one health check tells a busy peer from a
   * stuck one. (Against its p95 instead, a partition behind large answers read as busy, and was found late.)
   */
  async track<R>(endpoint: Endpoint, run: () => Promise<R>, timeoutMs?: number): Promise<R> {
    const entry = this.entryFor(endpoint);
    entry.inFlight++;
    entry.calls++;
    entry.lastUsedAt = this.opts.now();
    const started = this.opts.now();
    const observed = async (): Promise<R> => {
      try {
        return await run();
      } catch (err) {
        // Outcomes that prove nothing either way are marked so (not failures, not successes), and one
        // health check tells slow or busy from stuck. Cancelled by us: another attempt (a hedge) answered
        // first, or the caller gave up (checked even without a slow mark: an endpoint used too little to
        // know its usual latency can be frozen too). A timeout too short to judge by: the caller's budget.
        const cancelled = (err as { code?: number }).code === grpc.status.CANCELLED;
        if (cancelled) this.health.noteSlow(entry, this.opts.now() - started, SLOW_CANCELLED_FACTOR);
        if (cancelled || this.tightTimeout(entry, err, timeoutMs)) {
          markInconclusive(err);
          this.health.checkSuspect(
            entry,
            cancelled ? 'lost to a hedge' : `out of a caller's short budget (${timeoutMs} ms)`,
          );
        }
        throw err;
      }
    };
    try {
      const breaker = this.health.breakerOf(entry);
      if (breaker.closed) return (await breaker.fire(observed)) as R;
      try {
        const r = await observed();
        this.health.onSuccess(entry, this.opts.now() - started);
        breaker.close();
        return r;
      } catch (err) {
        const code = (err as { code?: number }).code;
        if (code !== undefined && isPeerFailure(code) && !isInconclusive(err))
          this.health.onFailure(entry, err);
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
    return { ...this.health.entered };
  }

  /** The health of every target list the manager keeps (remote sites, other pods of this site). */
  targets(): TargetHealth[] {
    return [...this.groups.values()].map((g) => ({ ...g.health }));
  }

  /** The endpoint's fastest usual answer in ms (see {@link floorMs}): about one round trip to it. */
  latencyFloorMs(endpoint: Endpoint): number | undefined {
    const entry = this.entries.get(endpoint.address);
    return entry && floorMs(entry, () => this.twins(entry));
  }

  /** The endpoint's p95 latency in ms, the hedge delay (see {@link p95Ms}). */
  latencyP95Ms(endpoint: Endpoint): number | undefined {
    const entry = this.entries.get(endpoint.address);
    return entry && p95Ms(entry, () => this.twins(entry));
  }

  /** True when `err` is a DEADLINE_EXCEEDED within a timeout too short to judge the endpoint by. */
  private tightTimeout(entry: Entry, err: unknown, timeoutMs: number | undefined): boolean {
    if ((err as { code?: number }).code !== grpc.status.DEADLINE_EXCEEDED || timeoutMs === undefined)
      return false;
    const roundTrip = floorMs(entry, () => this.twins(entry)) ?? entry.connectRttMs;
    return roundTrip !== undefined && timeoutMs < roundTrip * TIGHT_BUDGET_FACTOR;
  }

  /** The other endpoints of the entry's group (same link, same work); none for one used on demand. */
  private twins(entry: Entry): Entry[] {
    const group = entry.group === undefined ? undefined : this.groups.get(entry.group);
    return (group?.addresses ?? [])
      .map((a) => this.entries.get(a))
      .filter((e): e is Entry => e !== undefined && e !== entry);
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
    this.health.close();
    for (const e of this.entries.values()) this.closeEntry(e);
    this.entries.clear();
  }

  // ---- endpoint state: every change goes through transition() ----

  // ---- internals ----

  private createEntry(endpoint: PeerEndpoint, group?: string): Entry {
    return newEntry(endpoint, group, this.opts.now());
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
    entry.createdAt = this.opts.now();
    return openChannel(
      entry,
      () =>
        new FederationServiceClient(grpcTarget(entry.endpoint.address), this.credentials, {
          ...this.channelOptions,
          ...this.channelOptionsFor(entry.endpoint),
        }),
      (prev, next) => this.health.onConnectivity(entry, prev, next),
    );
  }

  private closeEntry(entry: Entry): void {
    if (entry.probeTimer) clearTimeout(entry.probeTimer);
    entry.probeTimer = undefined;
    this.health.clearConnectTimer(entry);
    entry.breaker?.shutdown();
    dropChannel(entry);
  }

  private retireChannel(entry: Entry, why: string): void {
    if (!entry.client) return;
    this.log.info(`channel retired (${why})`, logFields(entry));
    this.health.clearConnectTimer(entry);
    dropChannel(entry);
    // Nothing is known against an endpoint closed while usable: idle again. A down one stays down. One
    // that lost its connection and was reconnecting gets no verdict now (no channel, no connect timer): it
    // is down, probed in turn with the group's other failing endpoints — left "reconnecting", it kept its
    // target from ever being reported down (a partitioned site stayed "degraded").
    if (entry.state === 'connecting' || entry.state === 'ready') this.health.transition(entry, 'idle', why);
    else if (entry.state === 'reconnecting')
      this.health.transition(
        entry,
        'down',
        `connection lost; its channel closed before reconnecting (${why})`,
      );
  }

  /** The endpoint's health tier now (see {@link tierOf}). */
  private tier(entry: Entry): number {
    return tierOf(entry, this.opts.probeIntervalMs, this.opts.now());
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

  /** What the health state machine reaches of this manager. */
  private readonly healthHost = {
    closed: () => this.closed,
    group: (key: string) => this.groups.get(key),
    groupEntries: (group: Group) => this.groupEntries(group),
    openChannel: (entry: Entry) => this.ensureClient(entry),
    retireChannel: (entry: Entry, why: string) => this.retireChannel(entry, why),
    warmGroup: (key: string) => this.warmGroup(key),
  };

  /** How group-warmth.ts opens, retires and probes channels. */
  private readonly keeper: ChannelKeeper = {
    tier: (e) => this.tier(e),
    open: (e) => void this.ensureClient(e),
    retire: (e, why) => this.retireChannel(e, why),
    probe: (e) => this.health.startProbing(e),
    note: (message, e) => this.log.debug(message, logFields(e)),
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
        this.log.info('endpoint retired', logFields(e));
      } else if (!e.warm && now - e.lastUsedAt > this.opts.idleRetireMs) {
        this.retireChannel(e, 'idle');
      } else if (!e.warm && this.opts.maxChannelAgeMs > 0 && now - e.createdAt > this.opts.maxChannelAgeMs) {
        this.retireChannel(e, 'aged');
      }
    }
  }
}

function breakerState(b: CircuitBreaker): BreakerState {
  if (b.opened) return 'open';
  if (b.halfOpen) return 'half-open';
  return 'closed';
}
