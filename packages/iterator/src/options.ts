/** The connection iterator's options, outcome and records, and the constants that shape its behaviour. */
import { status } from '@grpc/grpc-js';
import type { Endpoint, TargetList } from '@wanas/proto';
import type { CancellableCall } from './calls';
import type { HedgeBudget } from './hedge-budget';

/** Hedge delay used when hedging is on, no fixed delay is given and the endpoint has no p95 yet. */
export const DEFAULT_HEDGE_DELAY_MS = 50;
/** Lower bound of a p95-derived hedge delay, so a very fast peer is not hedged on noise. */
export const MIN_HEDGE_DELAY_MS = 2;
/**
 * When a hedge backs up an attempt: the endpoint's p95 latency (or {@link DEFAULT_HEDGE_DELAY_MS} before
 * any), never more than half the attempt timeout (a p95 inflated by a few old outliers would leave a frozen
 * endpoint unhedged until it times out), never less than {@link MIN_HEDGE_DELAY_MS}.
 */
export function hedgeDelayMs(p95Ms: number | undefined, attemptTimeoutMs: number): number {
  return Math.max(MIN_HEDGE_DELAY_MS, Math.min(p95Ms ?? DEFAULT_HEDGE_DELAY_MS, attemptTimeoutMs / 2));
}
/** Hedges one request may send (each backs up the attempt before it), budget permitting. */
export const MAX_HEDGES_PER_REQUEST = 2;
/**
 * An attempt not acknowledged within twice its endpoint's fastest usual answer plus this (ms) comes from
 * a silent peer: an acknowledgement needs one round trip, and the fastest answer is about one.
 */
export const SILENT_SLACK_MS = 20;

/**
 * What the iterator needs from a connection manager: the best order of a target list, the long-lived
 * client for an endpoint, and a way to run one attempt under that endpoint's health tracking.
 */
export interface EndpointSource<C> {
  /** The target list's endpoints, best first; `prefer` picks among equally good ones. */
  order(target: TargetList, prefer?: (endpoint: Endpoint) => boolean): Endpoint[];
  /** The long-lived client (channel) for an endpoint. */
  client(endpoint: Endpoint): C;
  /**
   * Runs one attempt and records its outcome against the endpoint's health; `timeoutMs` is the attempt's
   * own timeout (a deadline too short to judge the endpoint by is not held against it).
   */
  track<R>(endpoint: Endpoint, run: () => Promise<R>, timeoutMs?: number): Promise<R>;
  /** The endpoint's observed p95 latency in ms, used as the hedge delay when none is fixed. */
  latencyP95Ms?(endpoint: Endpoint): number | undefined;
  /** The endpoint's fastest usual answer in ms (about one round trip): when its silence means something. */
  latencyFloorMs?(endpoint: Endpoint): number | undefined;
  /**
   * Set when every endpoint of the target is known down: since when (epoch ms) and why. The iterator then
   * reports the target UNAVAILABLE at once, with no attempt (see README, "How it stays fast and honest").
   */
  targetDown?(target: TargetList): { since: number; reason: string } | undefined;
}

/**
 * The abort reason that means "the overall deadline was reached" (not "the caller cancelled"): an iterator
 * aborted with it reports DEADLINE_EXCEEDED and records its attempts still in flight as cut off.
 */
export class DeadlineReached extends Error {
  constructor() {
    super('the overall deadline was reached');
    this.name = 'DeadlineReached';
  }
}

/** One shared instance: an abort reason is built on every request that hits its deadline. */
export const DEADLINE_REACHED = new DeadlineReached();

/** How an attempt is made. */
export interface AttemptMode {
  /**
   * Wait for the channel to (re)connect instead of failing fast (grpc-js `Metadata` option `waitForReady`): set on the last
   * resort after every endpoint failed without being reached, e.g. a pod's only broker restarting.
   */
  waitForReady: boolean;
  /** The attempt backs up an earlier one still in flight (a hedge). */
  hedged: boolean;
}

/** Starts one attempt on `client` with the given gRPC deadline. */
export type AttemptFn<C, R> = (
  client: C,
  endpoint: Endpoint,
  deadline: Date,
  mode: AttemptMode,
) => CancellableCall<R>;

/**
 * Longest last-resort wait for a channel to reconnect, ms: a little more than grpc-js's largest reconnect
 * back-off the connection manager sets (1 s), so a peer that is back is found again within it.
 */
export const RECONNECT_WAIT_MS = 1500;

/** The record of one attempt, as reported in PodResult.attempts. */
export interface AttemptRecord {
  brokerId: string;
  address: string;
  /** gRPC status code (0 = OK). */
  code: number;
  message: string;
  latencyMs: number;
  /** True when the attempt was a hedge started while another was running. */
  hedged: boolean;
}

/** Hedging settings; hedging applies to idempotent requests only. */
export interface HedgeOptions {
  /** Fixed delay before the hedge, ms; when unset, the endpoint's observed p95 (or 50 ms), at most half the attempt timeout. */
  delayMs?: number;
  /** Budget shared by all requests of a broker: bounds hedges to a share of requests. */
  budget: HedgeBudget;
  /**
   * Hedge only an attempt the peer has not acknowledged by the hedge delay. For a SiteRequest: a
   * representative that acknowledged is alive and waiting on its pods, which it hedges over its own LAN;
   * a second representative would wait on the same pods. A silent one (frozen, unreachable) is hedged —
   * or, when the budget has no token (and the broker is not saturated), switched: cancelled, and the next
   * endpoint asked instead.
   */
  onlyUnacknowledged?: boolean;
}

/** Options of one {@link ConnectionIterator} run. */
export interface ConnectionIteratorOptions<C, R> {
  /** The equivalent endpoints that may answer. */
  target: TargetList;
  /** Ordering, clients and health tracking (the connection manager). */
  source: EndpointSource<C>;
  /** Starts one attempt. */
  attempt: AttemptFn<C, R>;
  /** Overall deadline, epoch ms: no attempt outlives it. */
  deadline: number;
  /** Per-attempt timeout, ms; each attempt gets min(this, time left). */
  attemptTimeoutMs: number;
  /**
   * True when the request may be sent twice (the operation is idempotent, or it carries an idempotency
   * key the receiver remembers). Otherwise it is resent only when the first attempt surely never
   * reached the peer (connection refused).
   */
  idempotent: boolean;
  /** Hedging (off when unset; ignored for non-idempotent requests). */
  hedge?: HedgeOptions;
  /**
   * Busy is not broken: after a peer refused for load (RESOURCE_EXHAUSTED), its twin is tried only with a
   * token of this budget (shared by the broker's requests, ~10% of them); without one the refusal is the
   * answer, so a busy pod's load is not sent round its brokers. Unset: such failovers are not limited.
   */
  busyRetryBudget?: Pick<HedgeBudget, 'deposit' | 'tryWithdraw'>;
  /** Among equally good endpoints, try these first (e.g. a representative in the pod a search starts with). */
  prefer?: (endpoint: Endpoint) => boolean;
  /** Caller cancellation: aborting cancels every attempt. */
  signal?: AbortSignal;
  /** Clock (ms), injectable for tests. */
  now?: () => number;
}

/** The outcome of a run: one result, or one final code with a message that says what was tried. */
export type IteratorOutcome<R> =
  | { ok: true; value: R; endpoint: Endpoint; attempts: AttemptRecord[] }
  | { ok: false; code: number; message: string; attempts: AttemptRecord[] };

/** True when a failed call surely never reached the peer (no connection could be made). */
export function neverReachedPeer(err: { code?: number; details?: string; message?: string }): boolean {
  if (err.code !== status.UNAVAILABLE) return false;
  const text = `${err.details ?? ''} ${err.message ?? ''}`;
  return /ECONNREFUSED|No connection established|EHOSTUNREACH|ENETUNREACH/.test(text);
}
