import { isPeerFailure, type FederationServiceClient } from '@wanas/proto';
import { EventEmitter } from 'node:events';
import CircuitBreaker from 'opossum';
import type { Logger } from 'winston';
import { isInconclusive, noteSlow, type Entry } from './ordering';
import type { ConnectionManagerOptions, ManagerSettings } from './options';
import { evaluateTarget, targetName, type EndpointView } from './target-health';
import type { Connectivity, EndpointState, TargetHealth } from './types';

/** Why an endpoint whose connection attempt failed outright is down. */
export const REASON_REFUSED = 'connection failed (refused or unreachable)';
/** Probe intervals vary by ±this share, so probes of many targets do not fire in lockstep. */
const PROBE_JITTER = 0.2;
/** A connect timeout doubles with each consecutive one, up to this many times the configured one. */
const MAX_CONNECT_TIMEOUT_FACTOR = 8;
/** opossum's rolling window (its defaults): 10 buckets of 1 s, the last 10 s of calls. */
const BREAKER_WINDOW_MS = 10_000;
const BREAKER_BUCKETS = 10;

/** A target list the manager keeps warm: its addresses, rotation and health. */
export interface Group {
  site: string;
  pod: string;
  addresses: string[];
  rotation: number;
  /** The target's health, re-evaluated on every endpoint transition (see {@link evaluateTarget}). */
  health: TargetHealth;
}

/** What the health state machine needs of the connection manager: its groups and its channels. */
export interface HealthHost {
  closed(): boolean;
  group(key: string): Group | undefined;
  /** The group's endpoints (those still in the topology). */
  groupEntries(group: Group): Entry[];
  /** Opens (and connects) the endpoint's channel if it has none. */
  openChannel(entry: Entry): FederationServiceClient;
  retireChannel(entry: Entry, why: string): void;
  /** Warms what the group is missing now. */
  warmGroup(key: string): void;
}

/**
 * Endpoint health as a state machine (see {@link EndpointState}): every change goes through
 * {@link transition}. Fed by channel connectivity, call outcomes (through the endpoint's opossum
 * breaker), connect timeouts and grpc.health.v1 probes; re-evaluates the endpoint's target on each change.
 */
export class EndpointHealth {
  /** Endpoint transitions so far, by the state entered. */
  readonly entered: Record<EndpointState, number> = {
    idle: 0,
    connecting: 0,
    ready: 0,
    reconnecting: 0,
    failing: 0,
    down: 0,
  };
  /**
   * Turns every breaker's rolling window (opossum's `rotateBucketController`): one timer for the broker
   * instead of two per breaker (a bucket rotation and a stats snapshot, each once a second per endpoint).
   */
  private readonly breakerWindows = new EventEmitter().setMaxListeners(0);
  private readonly rotation: NodeJS.Timeout;

  constructor(
    private readonly opts: ManagerSettings,
    private readonly log: Logger,
    private readonly host: HealthHost,
    private readonly onTransition: ConnectionManagerOptions['onTransition'],
  ) {
    this.rotation = setInterval(
      () => this.breakerWindows.emit('rotate'),
      BREAKER_WINDOW_MS / BREAKER_BUCKETS,
    ).unref();
  }

  /** Stops the breakers' window rotation (the manager closes every breaker itself). */
  close(): void {
    clearInterval(this.rotation);
  }

  /**
   * The one place an endpoint's state changes (like grpc-js's `subchannel.transitionToState`): records
   * since when and why, logs the change, notifies `onTransition`, starts probing an endpoint that is down,
   * searches its group for a live twin when it stops being usable, and re-evaluates its target.
   */
  transition(entry: Entry, next: EndpointState, reason: string): void {
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
    const fields = { ...logFields(entry), from: prev, to: next, reason };
    if (next === 'down' || next === 'failing') this.log.warn(`endpoint ${next}`, fields);
    else if (prev === 'down' || prev === 'failing' || next === 'reconnecting')
      this.log.info(`endpoint ${next}`, fields);
    else this.log.debug(`endpoint ${next}`, fields);
    this.onTransition?.(entry.endpoint, prev, next, reason);
    if (next === 'down') this.startProbing(entry);
    if (entry.group === undefined) return;
    if (prev === 'ready' || next === 'down') this.host.warmGroup(entry.group);
    this.refreshTarget(entry.group);
  }

  /** Re-evaluates a group's target health after one of its endpoints changed state; logs a change. */
  private refreshTarget(key: string): void {
    const group = this.host.group(key);
    if (!group) return;
    const views = this.host.groupEntries(group).map(viewOf);
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
  onConnectivity(entry: Entry, prev: Connectivity, next: Connectivity): void {
    if (next === 'ready' || next === 'transient-failure' || prev === 'ready') {
      this.log.debug(`channel ${next}`, { ...logFields(entry), from: prev });
    }
    switch (next) {
      case 'ready':
        this.clearConnectTimer(entry);
        entry.connectTimeouts = 0;
        if (entry.state === 'down') this.probeNow(entry);
        else if (entry.state === 'idle' || entry.state === 'connecting' || entry.state === 'reconnecting')
          this.transition(entry, entry.consecutiveFailures > 0 ? 'failing' : 'ready', 'connected');
        if (entry.connectRttMs === undefined) this.measureRoundTrip(entry);
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
      if (entry.client !== client || !stuck || this.host.closed()) return;
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
      this.host.retireChannel(entry, 'connect timed out');
      if (entry.warm && !entry.retiring) this.host.openChannel(entry);
    }, timeoutMs);
    entry.connectTimer.unref();
  }

  /** True when the endpoint or a twin of its group lost its connection or is down: the link is suspect. */
  private lostLinkNear(entry: Entry): boolean {
    if (entry.state === 'reconnecting' || entry.state === 'down') return true;
    const group = entry.group === undefined ? undefined : this.host.group(entry.group);
    return (
      !!group && this.host.groupEntries(group).some((e) => e.state === 'reconnecting' || e.state === 'down')
    );
  }

  clearConnectTimer(entry: Entry): void {
    if (entry.connectTimer) clearTimeout(entry.connectTimer);
    entry.connectTimer = undefined;
  }

  /**
   * Times one health check on a channel that just connected: about one round trip to the peer (a WAN
   * one for a remote site), known before any request, so the first requests' hedge delay is not a
   * constant below it (see ConnectionManager.latencyP95Ms).
   */
  private measureRoundTrip(entry: Entry): void {
    const client = entry.client;
    if (!client || !entry.probe || this.host.closed()) return;
    const t0 = this.opts.now();
    void entry.probe.check(this.opts.probeTimeoutMs).then((serving) => {
      if (serving && entry.client === client) entry.connectRttMs ??= this.opts.now() - t0;
    });
  }

  /** A down endpoint's channel connected again: ask its health now rather than at the next probe tick. */
  private probeNow(entry: Entry): void {
    const client = entry.client;
    if (!client || this.host.closed()) return;
    void entry.probe!.check(this.opts.probeTimeoutMs).then((serving) => {
      if (serving && entry.client === client && !this.host.closed()) this.onProbeServing(entry);
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

  /** The endpoint's opossum breaker, created on first use. */
  breakerOf(entry: Entry): CircuitBreaker {
    if (entry.breaker) return entry.breaker;
    const breaker = new CircuitBreaker((run: () => Promise<unknown>) => run(), {
      timeout: false,
      resetTimeout: this.opts.resetTimeoutMs,
      errorThresholdPercentage: 50,
      volumeThreshold: 10,
      rollingCountTimeout: BREAKER_WINDOW_MS,
      rollingCountBuckets: BREAKER_BUCKETS,
      rotateBucketController: this.breakerWindows,
      // Latency is the LatencyWindow's (ordering, hedge delays); opossum's would sort every call of the
      // window at each failure, and its once-a-second snapshot events have no listener.
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
      // Caller errors (INVALID_ARGUMENT, NOT_FOUND, ...) are answers, not peer failures.
      errorFilter: (err: { code?: number }) =>
        err.code === undefined || !isPeerFailure(err.code) || isInconclusive(err),
    });
    breaker.on('success', (result: unknown, latencyMs: number) => {
      // A filtered error (caller's mistake) still proves the peer is alive, but says nothing of latency.
      const isError = result instanceof Error;
      // An outcome that proves nothing either way (a call we cancelled, a deadline too short to judge by:
      // see ConnectionManager.track): counted as a success, a cancel cleared the failures of a frozen
      // peer, which then came back first in rotation.
      if (isError && isInconclusive(result)) return;
      this.onSuccess(entry, isError ? undefined : latencyMs);
    });
    breaker.on('failure', (err: unknown) => this.onFailure(entry, err));
    breaker.on('open', () =>
      this.transition(entry, 'down', `breaker open after ${entry.consecutiveFailures} failures in a row`),
    );
    breaker.on('halfOpen', () => this.log.info('breaker half-open', logFields(entry)));
    breaker.on('close', () => this.log.info('breaker closed: endpoint healthy again', logFields(entry)));
    entry.breaker = breaker;
    return breaker;
  }

  /** Marks the endpoint slow when `ms` is far above its usual latency (see {@link noteSlow}). */
  noteSlow(entry: Entry, ms: number, factor?: number): void {
    noteSlow(entry, ms, this.opts.now(), factor);
  }

  onSuccess(entry: Entry, latencyMs: number | undefined): void {
    if (latencyMs !== undefined) {
      this.noteSlow(entry, latencyMs);
      entry.latency.add(latencyMs);
    }
    entry.consecutiveFailures = 0;
    this.transition(entry, 'ready', 'a call succeeded');
  }

  onFailure(entry: Entry, err: unknown): void {
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
   * An endpoint whose call proved nothing either way — it lost to a hedge after a long wait, or ran out of
   * a caller's short budget — may be slow or busy (a heavy tail: it stays ordered after its twins for a
   * while) or stuck (a frozen process, which answers nothing: without this it would come back into
   * rotation when the slow mark expires and cost a hedge delay each time). One health check tells them
   * apart: no SERVING answer within the probe timeout counts as a failure, and the endpoint is probed
   * until it answers again. `what`: what the call did, for the reason.
   */
  checkSuspect(entry: Entry, what: string): void {
    const client = entry.client;
    if (entry.suspectCheck || !client || this.host.closed()) return;
    entry.suspectCheck = true;
    void entry.probe!.check(this.opts.probeTimeoutMs).then((serving) => {
      entry.suspectCheck = false;
      if (serving || entry.client !== client || this.host.closed()) return;
      const why = `${what}, then no SERVING health answer within ${this.opts.probeTimeoutMs} ms`;
      this.transition(entry, 'down', why);
      this.onFailure(entry, new Error(why));
    });
  }

  /**
   * Probes a demoted endpoint with grpc.health.v1 until it answers SERVING. A SERVING answer closes an
   * open breaker and makes the endpoint eligible after its back-off; it does not clear the failures:
   * only a real call that succeeds does (a peer may answer health yet fail every call).
   */
  startProbing(entry: Entry): void {
    if (entry.probeTimer || this.host.closed()) return;
    const tick = async () => {
      entry.probeTimer = undefined;
      if (this.host.closed() || entry.retiring) return;
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
      const client = this.host.openChannel(entry);
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
}

/** The endpoint's identity, for log lines. */
export function logFields(entry: Entry): Record<string, unknown> {
  return {
    endpoint: entry.endpoint.brokerId,
    address: entry.endpoint.address,
    site: entry.endpoint.site,
    pod: entry.endpoint.pod,
  };
}

/** What target health reads of an endpoint. */
export function viewOf(e: Entry): EndpointView {
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
