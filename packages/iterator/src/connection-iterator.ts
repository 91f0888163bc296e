import { status, type ClientReadableStream, type ClientUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { codeName, isFailoverCode, type Endpoint, type TargetList } from '@wanas/proto';
import type { HedgeBudget } from './hedge-budget';

/** Hedge delay used when hedging is on, no fixed delay is given and the endpoint has no p95 yet. */
export const DEFAULT_HEDGE_DELAY_MS = 50;
/** Lower bound of a p95-derived hedge delay, so a very fast peer is not hedged on noise. */
export const MIN_HEDGE_DELAY_MS = 2;
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
  /** The target list's endpoints, best first. */
  order(target: TargetList): Endpoint[];
  /** The long-lived client (channel) for an endpoint. */
  client(endpoint: Endpoint): C;
  /** Runs one attempt and records its outcome against the endpoint's health. */
  track<R>(endpoint: Endpoint, run: () => Promise<R>): Promise<R>;
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

/** One started call that can be cancelled. */
export interface CancellableCall<R> {
  promise: Promise<R>;
  cancel(): void;
  /**
   * True once the peer has acknowledged the call (sent its response headers before the answer): it is
   * alive and working on it. See {@link HedgeOptions.onlyUnacknowledged}.
   */
  acknowledged?(): boolean;
}

/** How an attempt is made. */
export interface AttemptMode {
  /**
   * Wait for the channel to (re)connect instead of failing fast (grpc-js `Metadata` option `waitForReady`): set on the last
   * resort after every endpoint failed without being reached, e.g. a pod's only broker restarting.
   */
  waitForReady: boolean;
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

/** Adapts a grpc-js unary call (callback style) to a {@link CancellableCall}. */
export function unaryCall<Res>(
  start: (callback: (err: ServiceError | null, res?: Res) => void) => ClientUnaryCall,
): CancellableCall<Res> {
  let call: ClientUnaryCall | undefined;
  let acked = false;
  const promise = new Promise<Res>((resolve, reject) => {
    call = start((err, res) => (err ? reject(err) : resolve(res as Res)));
  });
  call?.on('metadata', () => (acked = true));
  return { promise, cancel: () => call?.cancel(), acknowledged: () => acked };
}

/**
 * Adapts a grpc-js server-streaming call to a {@link CancellableCall} of all its messages: `onMessage`
 * sees each as it arrives; the promise resolves with them all when the stream ends OK and rejects with
 * the call's error otherwise. Response headers count as the acknowledgement.
 */
export function streamCall<Msg>(
  stream: ClientReadableStream<Msg>,
  onMessage: (msg: Msg) => void,
): CancellableCall<Msg[]> {
  let acked = false;
  const messages: Msg[] = [];
  stream.on('metadata', () => (acked = true));
  const promise = new Promise<Msg[]>((resolve, reject) => {
    stream.on('data', (msg: Msg) => {
      messages.push(msg);
      onMessage(msg);
    });
    // grpc-js emits 'error' for a non-OK status before the stream's end; the first to settle counts.
    stream.on('error', reject);
    stream.on('end', () => resolve(messages));
  });
  return { promise, cancel: () => stream.cancel(), acknowledged: () => acked };
}

interface InFlight {
  endpoint: Endpoint;
  started: number;
  hedged: boolean;
  /** The last-resort wait for a reconnect. */
  waited: boolean;
  cancel(): void;
  acknowledged(): boolean;
  /** Given up on as silent (see switchFromSilent): its outcome, if any, is ignored. */
  abandoned?: boolean;
}

/**
 * Walks one request's target list: tries endpoints in the source's order, each attempt with an attempt
 * timeout capped by the overall deadline (propagated as the gRPC deadline); fails over on UNAVAILABLE,
 * RESOURCE_EXHAUSTED, an attempt's DEADLINE_EXCEEDED and connection errors; never on the caller's errors,
 * which are the answer. Optionally hedges idempotent requests within a budget. Every attempt is recorded.
 */
export class ConnectionIterator<C, R> {
  private readonly now: () => number;

  constructor(private readonly opts: ConnectionIteratorOptions<C, R>) {
    this.now = opts.now ?? Date.now;
  }

  /** Runs the request to its outcome. Never rejects; never outlives the overall deadline. */
  run(): Promise<IteratorOutcome<R>> {
    const { target, source, deadline, signal } = this.opts;
    // A target known down sends nothing: it takes no rotation turn and earns no hedge token.
    const down = source.targetDown?.(target);
    const order = down ? [] : source.order(target);
    const attempts: AttemptRecord[] = [];
    const inFlight = new Set<InFlight>();
    const hedging = this.opts.idempotent && this.opts.hedge !== undefined;
    if (!down) this.opts.hedge?.budget.deposit();
    let next = 0;
    let done = false;
    /** Every failure so far was a connection that could not be made (nothing reached a peer). */
    let noneReached = true;
    let reconnectWaited = false;
    let hedges = 0;
    let hedgeTimer: NodeJS.Timeout | undefined;
    let switchTimer: NodeJS.Timeout | undefined;
    let switched = false;
    let deadlineTimer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;

    return new Promise<IteratorOutcome<R>>((resolve) => {
      const finish = (outcome: IteratorOutcome<R>, inFlightCode: number = status.CANCELLED) => {
        if (done) return;
        done = true;
        if (hedgeTimer) clearTimeout(hedgeTimer);
        if (switchTimer) clearTimeout(switchTimer);
        if (deadlineTimer) clearTimeout(deadlineTimer);
        if (onAbort) signal?.removeEventListener('abort', onAbort);
        for (const f of inFlight) {
          f.cancel();
          const why = outcome.ok ? 'cancelled: another attempt answered first' : outcome.message;
          attempts.push(
            record(f, inFlightCode, inFlightCode === status.CANCELLED ? why : 'overall deadline passed'),
          );
        }
        inFlight.clear();
        resolve(outcome);
      };
      const record = (f: InFlight, code: number, message: string): AttemptRecord => ({
        brokerId: f.endpoint.brokerId,
        address: f.endpoint.address,
        code,
        message,
        latencyMs: this.now() - f.started,
        hedged: f.hedged,
      });
      const fail = (code: number, message: string) =>
        finish(
          { ok: false, code, message, attempts },
          code === status.DEADLINE_EXCEEDED ? code : status.CANCELLED,
        );
      const summary = () =>
        attempts
          .map((a) => `${a.brokerId}: ${codeName(a.code)}${a.message ? ` (${a.message})` : ''}`)
          .join('; ');

      /**
       * No token for a hedge, and an attempt still unacknowledged when an acknowledgement was surely due
       * (twice its endpoint's fastest usual answer, plus slack): its peer is silent (frozen, unreachable).
       * It is cancelled and the next endpoint asked instead — a switch, not a duplicate, so it adds no load
       * and needs no budget. At most one per request.
       */
      const switchFromSilent = (silent: InFlight, afterMs: number) => {
        switchTimer = undefined;
        if (done || silent.acknowledged() || !inFlight.has(silent) || next >= order.length) return;
        switched = true;
        silent.abandoned = true;
        inFlight.delete(silent);
        silent.cancel();
        attempts.push(
          record(
            silent,
            status.DEADLINE_EXCEEDED,
            `not acknowledged within ${afterMs} ms: asked a twin instead`,
          ),
        );
        launch(false);
      };
      /**
       * An attempt outlived its hedge delay: hedge it (unless every attempt in flight was acknowledged, see
       * onlyUnacknowledged), or, with no token left, plan a switch from a silent one.
       */
      const onHedgeDelay = () => {
        hedgeTimer = undefined;
        const hedge = this.opts.hedge!;
        if (done || inFlight.size === 0) return;
        if (hedge.onlyUnacknowledged && [...inFlight].every((x) => x.acknowledged())) return;
        if (hedge.budget.tryWithdraw()) {
          hedges++;
          launch(true);
          return;
        }
        if (!hedge.onlyUnacknowledged || switched || hedge.budget.saturated()) return;
        const silent = [...inFlight].find((x) => !x.acknowledged());
        const floor = silent && source.latencyFloorMs?.(silent.endpoint);
        if (!silent || floor === undefined) return;
        const afterMs = Math.round(2 * floor + SILENT_SLACK_MS);
        const wait = Math.max(0, silent.started + afterMs - this.now());
        switchTimer = setTimeout(() => switchFromSilent(silent, afterMs), wait);
      };
      const launch = (hedged: boolean): boolean => {
        if (done || next >= order.length) return false;
        if (deadline - this.now() <= 0) return false;
        return start(order[next++]!, hedged, false);
      };
      /**
       * The last resort: every endpoint failed without a connection, so nothing was delivered; wait for
       * the best one to reconnect (bounded) rather than report the pod unavailable at once.
       */
      const waitForReconnect = (): boolean => {
        if (done || reconnectWaited || !noneReached || order.length === 0) return false;
        if (deadline - this.now() <= 0) return false;
        reconnectWaited = true;
        return start(order[0]!, false, true);
      };
      const start = (endpoint: Endpoint, hedged: boolean, waitForReady: boolean): boolean => {
        const started = this.now();
        const remaining = deadline - started;
        const timeout = Math.min(
          this.opts.attemptTimeoutMs,
          remaining,
          waitForReady ? RECONNECT_WAIT_MS : Infinity,
        );
        const attemptDeadline = started + timeout;
        let call: CancellableCall<R>;
        try {
          call = this.opts.attempt(source.client(endpoint), endpoint, new Date(attemptDeadline), {
            waitForReady,
          });
        } catch (err) {
          attempts.push({
            ...endpoint,
            code: status.UNAVAILABLE,
            message: (err as Error).message,
            latencyMs: 0,
            hedged,
          });
          return launch(hedged);
        }
        const f: InFlight = {
          endpoint,
          started,
          hedged,
          waited: waitForReady,
          cancel: () => call.cancel(),
          acknowledged: () => call.acknowledged?.() ?? false,
        };
        inFlight.add(f);
        source
          .track(endpoint, () => call.promise)
          .then(
            (value) => {
              if (done || f.abandoned) return;
              inFlight.delete(f);
              attempts.push(record(f, status.OK, ''));
              finish({ ok: true, value, endpoint, attempts });
            },
            (err: ServiceError) => {
              if (done || f.abandoned) return;
              inFlight.delete(f);
              const code = typeof err.code === 'number' ? err.code : status.UNKNOWN;
              const message = err.details || err.message || codeName(code);
              attempts.push(record(f, code, message));
              const unreached = neverReachedPeer(err);
              noneReached &&= unreached;
              const resendable = this.opts.idempotent || unreached;
              if (!isFailoverCode(code) || !resendable) {
                // The caller's error is the answer; a possibly-delivered write is never sent twice.
                if (inFlight.size === 0 || !isFailoverCode(code)) fail(code, message);
                return;
              }
              if (launch(false) || inFlight.size > 0 || waitForReconnect()) return;
              const out = deadline - this.now() <= 0;
              // A reconnect wait that ran out means no peer could be reached: unavailable, not slow.
              fail(
                out ? status.DEADLINE_EXCEEDED : f.waited ? status.UNAVAILABLE : code,
                `${out ? 'deadline exceeded' : `all ${attempts.length} attempts failed`} for ${targetName(target)}: ${summary()}`,
              );
            },
          );
        // A hedge may be followed by another (the twin asked can be stuck too), each after the delay of
        // the attempt it backs up, at most MAX_HEDGES_PER_REQUEST per request and within the budget.
        if (hedging && hedges < MAX_HEDGES_PER_REQUEST && next < order.length && !hedgeTimer) {
          // The endpoint's p95, but never more than half the attempt timeout: a p95 inflated by a few old
          // outliers (a busy start-up) would otherwise leave a frozen endpoint unhedged until it times out.
          const delay =
            this.opts.hedge!.delayMs ??
            Math.max(
              MIN_HEDGE_DELAY_MS,
              Math.min(
                source.latencyP95Ms?.(endpoint) ?? DEFAULT_HEDGE_DELAY_MS,
                this.opts.attemptTimeoutMs / 2,
              ),
            );
          hedgeTimer = setTimeout(onHedgeDelay, delay);
        }
        return true;
      };

      const aborted = () =>
        signal?.reason instanceof DeadlineReached
          ? fail(
              status.DEADLINE_EXCEEDED,
              `deadline exceeded for ${targetName(target)}${attempts.length ? `: ${summary()}` : ''} (cut off by the overall deadline)`,
            )
          : fail(status.CANCELLED, 'cancelled by the caller');
      if (signal?.aborted) return aborted();
      if (signal) {
        onAbort = aborted;
        signal.addEventListener('abort', onAbort, { once: true });
      }
      if (down) {
        const ago = Math.max(0, this.now() - down.since);
        return fail(
          status.UNAVAILABLE,
          `${targetName(target)} is down since ${new Date(down.since).toISOString()} (${ago} ms): ${down.reason}; not tried, probed in the background`,
        );
      }
      if (order.length === 0)
        return fail(status.UNAVAILABLE, `no endpoint in the target list of ${targetName(target)}`);
      if (!launch(false)) {
        return fail(status.DEADLINE_EXCEEDED, `no time left to reach ${targetName(target)}`);
      }
      // Safety net: the attempts carry gRPC deadlines capped by the overall one, so this rarely fires.
      deadlineTimer = setTimeout(
        () => {
          const tried = summary();
          fail(
            status.DEADLINE_EXCEEDED,
            `deadline exceeded for ${targetName(target)}${tried ? `: ${tried}` : ''}`,
          );
        },
        Math.max(0, deadline - this.now()) + 5,
      );
    });
  }
}

function targetName(t: TargetList): string {
  return t.pod ? `${t.site}/${t.pod}` : t.site;
}
