/**
 * The connection manager's options and tuning constants (defaults, with units and reasons), and the
 * grpc-js channel options every peer channel gets.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'winston';
import type { EndpointState, PeerEndpoint } from './types';

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
/**
 * HTTP/2 keepalive ping interval on peer channels, ms. With the timeout below, a blackholed link (a WAN
 * partition, a frozen peer) is noticed within keepalive time + timeout (≤ 1.1 s), even with no traffic.
 */
export const DEFAULT_KEEPALIVE_TIME_MS = 600;
/**
 * Time to wait for a keepalive ping's answer before the connection is declared dead, ms: a WAN round trip
 * (tens of ms here, up to ~300 ms between continents) plus slack for a busy peer's event loop.
 */
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 500;
/**
 * A channel still connecting after this long means a silent peer (a TCP connection accepted but no HTTP/2
 * answer: partition or frozen process); the endpoint is marked down and the channel dialled afresh
 * (grpc-js has no connect timeout of its own). Doubles with each consecutive timeout (at most 8×), so a
 * live peer behind a slow link still connects. A TLS connection costs ~3 round trips: raise this for WAN
 * round trips above ~150 ms.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 500;
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
  /** HTTP/2 keepalive ping interval, ms (default {@link DEFAULT_KEEPALIVE_TIME_MS}). */
  keepaliveTimeMs?: number;
  /** HTTP/2 keepalive ping timeout, ms (default {@link DEFAULT_KEEPALIVE_TIMEOUT_MS}). */
  keepaliveTimeoutMs?: number;
  /** Connect timeout, ms (default {@link DEFAULT_CONNECT_TIMEOUT_MS}). */
  connectTimeoutMs?: number;
  /** Called after every endpoint state change (e.g. to count transitions in metrics). */
  onTransition?: (endpoint: PeerEndpoint, from: EndpointState, to: EndpointState, reason: string) => void;
  /** Logger; the manager logs through `logger.child({ component: 'connection-manager' })`. */
  logger?: Logger;
  /** Clock (ms), injectable for tests. */
  now?: () => number;
}

/** Longest timer Node accepts, ms (grpc-js's client idle timeout is disabled with it). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The grpc-js options of every peer channel: WAN-tuned keepalive, fast reconnects, no shared subchannels. */
export function peerChannelOptions(o: {
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
}): grpc.ChannelOptions {
  return {
    'grpc.keepalive_time_ms': o.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': o.keepaliveTimeoutMs,
    'grpc.keepalive_permit_without_calls': 1,
    // A channel going idle after 30 min without calls would read as a lost connection: warm channels stay.
    'grpc.client_idle_timeout_ms': MAX_TIMER_MS,
    'grpc.initial_reconnect_backoff_ms': 200,
    // A peer that restarts is found within a second: a long backoff fails calls fast while it is back.
    'grpc.max_reconnect_backoff_ms': 1_000,
    // Our own channel per endpoint: retiring one never disturbs another manager's connection.
    'grpc.use_local_subchannel_pool': 1,
    // channelz keeps per-channel trace buffers and registry entries nobody reads here (memory per peer).
    'grpc.enable_channelz': 0,
  };
}

/** The manager's settings once defaults are applied (what it and its parts read). */
export type ManagerSettings = Required<
  Omit<
    ConnectionManagerOptions,
    'logger' | 'credentials' | 'channelOptions' | 'channelOptionsFor' | 'onTransition'
  >
>;

/** The settings of `options`, defaults applied and checked (a bad value throws a RangeError naming it). */
export function settingsOf(options: ConnectionManagerOptions): ManagerSettings {
  const warm = options.warmPerTarget ?? DEFAULT_WARM_PER_TARGET;
  if (!Number.isInteger(warm) || warm < 1 || warm > MAX_WARM_PER_TARGET) {
    throw new RangeError(`warmPerTarget must be an integer from 1 to ${MAX_WARM_PER_TARGET}, got ${warm}`);
  }
  return {
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
}
