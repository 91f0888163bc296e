/**
 * How a connection manager ranks equivalent endpoints: health tiers, the slow mark, latency, rotation.
 * Pure functions over the manager's per-endpoint state.
 */
import type { FederationServiceClient, Endpoint } from '@wanas/proto';
import type CircuitBreaker from 'opossum';
import type { HealthProbe } from './health-probe';
import { LatencyWindow } from './latency-window';
import type { Connectivity, EndpointState, PeerEndpoint } from './types';

/** Longest time a failing endpoint sits out before it may be tried again (its back-off cap). */
export const MAX_RETRY_AFTER_MS = 30_000;
/**
 * An answer slower than this many times an endpoint's moving average (plus {@link SLOW_SLACK_MS}), or a
 * call cancelled after that long (a hedge answered first), marks the endpoint slow: for
 * {@link SLOW_MEMORY_MS} it is ordered after its equally healthy twins, so a broker with a heavy tail
 * stops being the first choice (e.g. a site's representative) while its twins answer.
 */
export const SLOW_FACTOR = 3;
/** Absolute slack of the slow test for answers, ms (LAN averages are a few ms). */
export const SLOW_SLACK_MS = 100;
/** A call cancelled this long after it started (vs the moving average) lost to a hedge: slow too. */
export const SLOW_CANCELLED_FACTOR = 1.5;
/**
 * A DEADLINE_EXCEEDED within an attempt timeout shorter than this many times the endpoint's fastest usual
 * answer (about a round trip) says the caller's budget ran out, not that the endpoint failed: under load a
 * federation's last hops get what is left of 300 ms, and counting their timeouts marked busy peers failing
 * and sent their work to twins.
 */
export const TIGHT_BUDGET_FACTOR = 2;
const INCONCLUSIVE = Symbol('wanas.inconclusive');
/** Marks an error as saying nothing of the endpoint's health (see {@link TIGHT_BUDGET_FACTOR}). */
export function markInconclusive(err: unknown): void {
  if (err && typeof err === 'object') (err as Record<symbol, boolean>)[INCONCLUSIVE] = true;
}
/** True for an error {@link markInconclusive} marked. */
export function isInconclusive(err: unknown): boolean {
  return !!err && typeof err === 'object' && (err as Record<symbol, boolean>)[INCONCLUSIVE] === true;
}
/** How long a slow mark orders an endpoint after its twins, ms. */
export const SLOW_MEMORY_MS = 30_000;

/** Endpoints whose latency is within this factor (+ {@link EQUAL_LATENCY_SLACK_MS}) of the best are rotated as equals. */
const EQUAL_LATENCY_FACTOR = 1.25;
/** A latency sample older than this no longer orders endpoints, ms. */
const STALE_LATENCY_MS = 2_000;
/** Absolute slack of the equality test, ms: LAN latencies differ by noise alone. */
const EQUAL_LATENCY_SLACK_MS = 2;

/** Per-endpoint state. */
export interface Entry {
  endpoint: PeerEndpoint;
  /** Key of the group (target list kept warm) the endpoint belongs to; undefined for one used on demand. */
  group: string | undefined;
  client: FederationServiceClient | undefined;
  probe: HealthProbe | undefined;
  createdAt: number;
  lastUsedAt: number;
  inFlight: number;
  connectivity: Connectivity;
  /** Health state (see {@link EndpointState}); changed only by EndpointHealth#transition (endpoint-health.ts). */
  state: EndpointState;
  /** When `state` was entered (ms). */
  stateSince: number;
  /** Why `state` was entered. */
  stateReason: string;
  /** Connect attempts in a row that ran past the connect timeout (each doubles the next timeout). */
  connectTimeouts: number;
  /** Fires when the channel has been connecting longer than the connect timeout. */
  connectTimer: NodeJS.Timeout | undefined;
  /** Created on first use: an endpoint never called needs no breaker (nor its rolling-window timer). */
  breaker: CircuitBreaker | undefined;
  consecutiveFailures: number;
  /** When the last peer failure happened (ms). */
  lastFailureAt: number;
  /** When the health probe last answered SERVING (ms). */
  probeOkAt: number;
  /** When a closed failing endpoint was last given a channel again to be probed (ms). */
  lastProbeStartAt: number;
  /** When the endpoint last answered far slower than usual (ms; see SLOW_FACTOR). */
  slowAt: number;
  latency: LatencyWindow;
  /**
   * One health check's round trip when the channel first connected (ms; undefined until measured): what
   * the hedge delay starts from before the endpoint has answered enough calls for a p95.
   */
  connectRttMs: number | undefined;
  warm: boolean;
  /** Removed from the topology: closed as soon as no call is in flight. */
  retiring: boolean;
  probeTimer: NodeJS.Timeout | undefined;
  /** A health check is running because the endpoint lost to a hedge (see ConnectionManager.track). */
  suspectCheck: boolean;
  calls: number;
  failures: number;
}

/** A new endpoint's state at `now`: idle, no channel, nothing known (the manager's and the tests' one way to make one). */
export function newEntry(endpoint: PeerEndpoint, group: string | undefined, now: number): Entry {
  return {
    endpoint,
    group,
    client: undefined,
    probe: undefined,
    createdAt: 0,
    lastUsedAt: now,
    inFlight: 0,
    connectivity: 'none',
    state: 'idle',
    stateSince: now,
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
    connectRttMs: undefined,
    warm: false,
    retiring: false,
    probeTimer: undefined,
    suspectCheck: false,
    calls: 0,
    failures: 0,
  };
}

/**
 * 0 warm & healthy, 1 usable but not connected (idle, connecting), 2 failing lately or reconnecting after
 * a lost connection, 3 down.
 * A `failing` endpoint sits out a back-off that doubles with each consecutive failure (probe interval ×
 * 2^(failures-1), at most {@link MAX_RETRY_AFTER_MS}); it is eligible again (tier 0/1) once the back-off has
 * passed and its health probe has answered SERVING since the failure. The next real call then decides.
 */
export function tierOf(entry: Entry, probeIntervalMs: number, now: number): number {
  switch (entry.state) {
    case 'down':
      return 3;
    case 'failing': {
      const backoff = Math.min(MAX_RETRY_AFTER_MS, probeIntervalMs * 2 ** (entry.consecutiveFailures - 1));
      const eligible = entry.probeOkAt > entry.lastFailureAt && now - entry.lastFailureAt >= backoff;
      if (!eligible) return 2;
      return entry.connectivity === 'ready' ? 0 : 1;
    }
    case 'ready':
      return entry.connectivity === 'ready' ? 0 : 1;
    case 'reconnecting':
      return 2;
    case 'idle':
    case 'connecting':
      return 1;
  }
}

/** Marks `entry` slow when a call took `ms`, far above its moving average (`factor` ×, see {@link SLOW_FACTOR}). */
export function noteSlow(entry: Entry, ms: number, now: number, factor = SLOW_FACTOR): void {
  // Too few samples (an endpoint just back from failures, a new channel) say nothing of "usual".
  if (entry.consecutiveFailures > 0 || !entry.latency.settled) return;
  const mean = entry.latency.meanMs();
  if (mean !== undefined && ms > mean * factor + (factor === SLOW_FACTOR ? SLOW_SLACK_MS : 0))
    entry.slowAt = now;
}

/**
 * The target list best first: warm and healthy endpoints first, by observed latency, rotating among
 * equals so load spreads (`nextRotation` gives the group's rotation counter); then healthy endpoints
 * without a connection yet; then healthy endpoints that answered far slower than usual lately; then
 * endpoints that failed lately; endpoints with an open breaker last (still tried if nothing else answers).
 * `prefer` picks among the equals at the head, in place of the rotation (never over a healthier one).
 */
export function rankEndpoints(
  candidates: { ep: Endpoint; entry: Entry }[],
  tier: (entry: Entry) => number,
  now: number,
  nextRotation: () => number,
  prefer?: (ep: Endpoint) => boolean,
): Endpoint[] {
  const scored = candidates.map(({ ep, entry }) => {
    // A latency not refreshed lately says little: treat it as unknown (an equal), so an endpoint left
    // out of rotation by one slow sample gets calls, and a fresh measurement, again.
    const fresh = now - entry.lastUsedAt < STALE_LATENCY_MS;
    const slow = entry.slowAt > 0 && now - entry.slowAt < SLOW_MEMORY_MS ? 1 : 0;
    return { ep, entry, tier: tier(entry), slow, latency: fresh ? entry.latency.meanMs() : undefined };
  });
  // Healthy first (connected or not), and among them not-slow first; then connected first, then latency.
  const health = (x: { tier: number }) => (x.tier <= 1 ? 0 : x.tier);
  scored.sort(
    (a, b) =>
      health(a) - health(b) || a.slow - b.slow || a.tier - b.tier || (a.latency ?? 0) - (b.latency ?? 0),
  );
  const first = scored[0];
  if (!first) return [];
  // Rotate among the equals at the head: same tier, latency close to the best.
  const best = first.latency;
  let equals = 1;
  while (equals < scored.length) {
    const s = scored[equals]!;
    if (s.tier !== first.tier || s.slow !== first.slow) break;
    if (
      best !== undefined &&
      s.latency !== undefined &&
      s.latency > best * EQUAL_LATENCY_FACTOR + EQUAL_LATENCY_SLACK_MS
    )
      break;
    equals++;
  }
  if (equals > 1) {
    const head = scored.splice(0, equals);
    // A preferred endpoint among the equals goes first (no rotation); else the equals take turns.
    const preferred = prefer ? head.findIndex((s) => prefer(s.ep)) : -1;
    const shift = preferred >= 0 ? preferred : nextRotation() % equals;
    scored.unshift(head[shift]!, ...head.filter((_, i) => i !== shift));
  }
  return scored.map((s) => ({ brokerId: s.ep.brokerId, address: s.ep.address }));
}
