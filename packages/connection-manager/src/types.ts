/** One peer broker as the connection manager dials it. */
export interface PeerEndpoint {
  /** Broker id from the topology. */
  brokerId: string;
  /** host:port this broker dials: the LAN `address` for its own site, the `wanAddress` for other sites. */
  address: string;
  /** Site of the peer. */
  site: string;
  /** Pod of the peer. */
  pod: string;
}

/**
 * A target list the manager keeps warm: every remote site (pod empty, endpoints at `wanAddress`) and
 * every other pod of the broker's own site (endpoints at `address`).
 */
export interface PeerGroup {
  /** Site of the group. */
  site: string;
  /** Pod of the group; empty for a remote site's group. */
  pod: string;
  /** Equivalent endpoints of the group. */
  endpoints: PeerEndpoint[];
}

/**
 * Channel connectivity, as grpc-js reports it:
 * - `idle`: no connection and none wanted yet;
 * - `connecting`: TCP/HTTP2 set-up in progress;
 * - `ready`: a warm connection that can carry calls now;
 * - `transient-failure`: the last connection attempt failed; grpc-js retries with backoff;
 * - `shutdown`: the channel was closed by the manager;
 * - `none`: no channel exists for this endpoint.
 */
export type Connectivity = 'idle' | 'connecting' | 'ready' | 'transient-failure' | 'shutdown' | 'none';

/**
 * Breaker state (opossum):
 * - `closed`: calls flow, failures are counted;
 * - `open`: the endpoint is ordered last and probed with grpc.health.v1 until it answers SERVING;
 * - `half-open`: the next call is a trial.
 */
export type BreakerState = 'closed' | 'open' | 'half-open';

/**
 * Health of one endpoint, as the connection manager knows it. Every change goes through one transition
 * (ConnectionManager#transition) that logs it, counts it and re-evaluates the endpoint's target.
 * - `idle`: no channel and nothing known against it: usable (a call connects it);
 * - `connecting`: a channel is being set up and has not failed yet: usable (calls wait for it) until the
 *   connect timeout;
 * - `ready`: connected, and no peer failure since the last success;
 * - `reconnecting`: its live connection was lost (keepalive timeout, reset, GOAWAY) and a new one is being
 *   made: ordered after healthy twins (a frozen peer or a partition looks like this for one connect
 *   timeout) until it connects (`ready`), is refused or times out (`down`);
 * - `failing`: a call failed lately: ordered after healthy twins for a back-off, then tried again once its
 *   health probe answers;
 * - `down`: known unreachable — connection refused or lost (keepalive timeout, reset), no connection within
 *   the connect timeout, breaker open, or a health check unanswered. Never chosen while a twin is not down;
 *   probed in the background; leaves this state only when a health check answers SERVING (or a call succeeds).
 */
export type EndpointState = 'idle' | 'connecting' | 'ready' | 'reconnecting' | 'failing' | 'down';

/**
 * Health of one target list (a remote site's brokers, or a pod's brokers):
 * - `up`: no endpoint is down;
 * - `degraded`: some endpoints are down, at least one is not;
 * - `down`: every endpoint is down: requests report the target UNAVAILABLE at once, without an attempt.
 */
export type TargetState = 'up' | 'degraded' | 'down';

/** A target list's health: its state, since when, and why (for `down`, each endpoint's reason). */
export interface TargetHealth {
  site: string;
  /** Empty for a remote site's target. */
  pod: string;
  state: TargetState;
  /** When the target entered `state` (epoch ms). */
  since: number;
  /** Why: for `down` and `degraded`, the down endpoints and their reasons. */
  reason: string;
}

/** One row of the health table (for `wanas status` and metrics). */
export interface HealthRow {
  brokerId: string;
  address: string;
  site: string;
  pod: string;
  connectivity: Connectivity;
  breaker: BreakerState;
  /** The endpoint's health state. */
  state: EndpointState;
  /** Time in that state, ms. */
  stateAgeMs: number;
  /** Why it entered that state (e.g. "keepalive timeout or reset: connection lost"). */
  stateReason: string;
  /** Failures since the last success. */
  consecutiveFailures: number;
  /** Smoothed latency of successful calls, ms (undefined before the first). */
  latencyMs: number | undefined;
  /** Calls in flight on this endpoint now. */
  inFlight: number;
  /** True when the manager keeps this channel connected ahead of need. */
  warm: boolean;
  /** Age of the channel, ms (undefined when there is none). */
  channelAgeMs: number | undefined;
  /** Total calls made through this endpoint. */
  calls: number;
  /** Total calls that counted as peer failures. */
  failures: number;
}
