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

/** One row of the health table (for `wanas status` and metrics). */
export interface HealthRow {
  brokerId: string;
  address: string;
  site: string;
  pod: string;
  connectivity: Connectivity;
  breaker: BreakerState;
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
