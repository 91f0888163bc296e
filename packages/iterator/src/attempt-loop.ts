import { status, type ServiceError } from '@grpc/grpc-js';
import { codeName, isFailoverCode, type Endpoint, type TargetList } from '@wanas/proto';
import type { CancellableCall } from './calls';
import {
  DeadlineReached,
  MAX_HEDGES_PER_REQUEST,
  RECONNECT_WAIT_MS,
  SILENT_SLACK_MS,
  hedgeDelayMs,
  neverReachedPeer,
  type AttemptRecord,
  type ConnectionIteratorOptions,
  type IteratorOutcome,
} from './options';

/**
 * Where one run stands. `trying`: attempts in flight or endpoints left to try. `reconnecting`: every
 * endpoint failed without a connection; the last resort, a bounded wait for the best one to reconnect, is
 * in flight. `done`: the outcome is decided (answer, error, deadline or cancel); nothing runs any more.
 */
export type LoopState = 'trying' | 'reconnecting' | 'done';

/** One attempt in flight. */
interface InFlight {
  endpoint: Endpoint;
  started: number;
  hedged: boolean;
  /** The last-resort wait for a reconnect. */
  waited: boolean;
  cancel(): void;
  acknowledged(): boolean;
  /** Given up on as silent (see maybeSwitchFromSilent): its outcome, if any, is ignored. */
  abandoned?: boolean;
}

/**
 * One run of a {@link ConnectionIterator}, as a state machine ({@link LoopState}, changed only by
 * {@link transition}): attempts in the source's order, failover on retryable failures, hedges and switches
 * from silent peers within the budget, the last-resort reconnect wait, and one outcome. Events arrive as
 * `handle*` calls (an attempt's answer or failure, the hedge delay, an abort); `maybe*` methods decide
 * whether to act on them.
 */
export class AttemptLoop<C, R> {
  private state: LoopState = 'trying';
  private readonly order: Endpoint[];
  private readonly down: { since: number; reason: string } | undefined;
  private readonly attempts: AttemptRecord[] = [];
  private readonly inFlight = new Set<InFlight>();
  private readonly hedging: boolean;
  /** Next endpoint of `order` to try. */
  private next = 0;
  /** Every failure so far was a connection that could not be made (nothing reached a peer). */
  private noneReached = true;
  private hedges = 0;
  private switched = false;
  private hedgeTimer: NodeJS.Timeout | undefined;
  private switchTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private resolve!: (outcome: IteratorOutcome<R>) => void;
  private readonly onAbort = () => this.handleAbort();

  constructor(
    private readonly opts: ConnectionIteratorOptions<C, R>,
    private readonly now: () => number,
  ) {
    // A target known down sends nothing: it takes no rotation turn and earns no hedge token.
    this.down = opts.source.targetDown?.(opts.target);
    this.order = this.down ? [] : opts.source.order(opts.target, opts.prefer);
    this.hedging = opts.idempotent && opts.hedge !== undefined;
    if (!this.down) {
      opts.hedge?.budget.deposit();
      opts.busyRetryBudget?.deposit();
    }
  }

  /** Runs to the outcome. Never rejects; never outlives the overall deadline. */
  run(): Promise<IteratorOutcome<R>> {
    return new Promise((resolve) => {
      this.resolve = resolve;
      this.start();
    });
  }

  private start(): void {
    const { signal, target, deadline } = this.opts;
    if (signal?.aborted) return this.handleAbort();
    signal?.addEventListener('abort', this.onAbort, { once: true });
    if (this.down) {
      const ago = Math.max(0, this.now() - this.down.since);
      return this.fail(
        status.UNAVAILABLE,
        `${targetName(target)} is down since ${new Date(this.down.since).toISOString()} (${ago} ms): ${this.down.reason}; not tried, probed in the background`,
      );
    }
    if (this.order.length === 0)
      return this.fail(status.UNAVAILABLE, `no endpoint in the target list of ${targetName(target)}`);
    if (!this.launch(false))
      return this.fail(status.DEADLINE_EXCEEDED, `no time left to reach ${targetName(target)}`);
    // Safety net: the attempts carry gRPC deadlines capped by the overall one, so this rarely fires.
    this.deadlineTimer = setTimeout(
      () => {
        const tried = this.summary();
        this.fail(
          status.DEADLINE_EXCEEDED,
          `deadline exceeded for ${targetName(target)}${tried ? `: ${tried}` : ''}`,
        );
      },
      Math.max(0, deadline - this.now()) + 5,
    );
  }

  /** The one place the state changes; leaving for `done` stops every timer and listener. */
  private transition(to: LoopState): void {
    this.state = to;
    if (to !== 'done') return;
    clearTimeout(this.hedgeTimer);
    clearTimeout(this.switchTimer);
    clearTimeout(this.deadlineTimer);
    this.opts.signal?.removeEventListener('abort', this.onAbort);
  }

  /** Decides the outcome: attempts still in flight are cancelled and recorded with `inFlightCode`. */
  private finish(outcome: IteratorOutcome<R>, inFlightCode: number = status.CANCELLED): void {
    if (this.state === 'done') return;
    this.transition('done');
    for (const f of this.inFlight) {
      f.cancel();
      const why = outcome.ok ? 'cancelled: another attempt answered first' : outcome.message;
      this.attempts.push(
        this.record(f, inFlightCode, inFlightCode === status.CANCELLED ? why : 'overall deadline passed'),
      );
    }
    this.inFlight.clear();
    this.resolve(outcome);
  }

  private fail(code: number, message: string): void {
    this.finish(
      { ok: false, code, message, attempts: this.attempts },
      code === status.DEADLINE_EXCEEDED ? code : status.CANCELLED,
    );
  }

  /** Tries the next endpoint of the order (a hedge when `hedged`); false when none is left or no time. */
  private launch(hedged: boolean): boolean {
    if (this.state === 'done' || this.next >= this.order.length) return false;
    if (this.opts.deadline - this.now() <= 0) return false;
    return this.startAttempt(this.order[this.next++]!, hedged, false);
  }

  /**
   * The last resort: every endpoint failed without a connection, so nothing was delivered; wait for the
   * best one to reconnect (bounded) rather than report the target unavailable at once. Once per run.
   */
  private maybeWaitForReconnect(): boolean {
    if (this.state !== 'trying' || !this.noneReached || this.order.length === 0) return false;
    if (this.opts.deadline - this.now() <= 0) return false;
    this.transition('reconnecting');
    return this.startAttempt(this.order[0]!, false, true);
  }

  /** Starts one attempt with its timeout (capped by the deadline) and, for the first ones, a hedge timer. */
  private startAttempt(endpoint: Endpoint, hedged: boolean, waitForReady: boolean): boolean {
    const { opts } = this;
    const started = this.now();
    const timeout = Math.min(
      opts.attemptTimeoutMs,
      opts.deadline - started,
      waitForReady ? RECONNECT_WAIT_MS : Infinity,
    );
    let call: CancellableCall<R>;
    try {
      call = opts.attempt(opts.source.client(endpoint), endpoint, new Date(started + timeout), {
        waitForReady,
        hedged,
      });
    } catch (err) {
      this.attempts.push({
        ...endpoint,
        code: status.UNAVAILABLE,
        message: (err as Error).message,
        latencyMs: 0,
        hedged,
      });
      return this.launch(hedged);
    }
    const f: InFlight = {
      endpoint,
      started,
      hedged,
      waited: waitForReady,
      cancel: () => call.cancel(),
      acknowledged: () => call.acknowledged?.() ?? false,
    };
    this.inFlight.add(f);
    opts.source
      .track(endpoint, () => call.promise, timeout)
      .then(
        (value) => this.handleAnswer(f, value),
        (err: ServiceError) => this.handleFailure(f, err),
      );
    this.maybeArmHedge(endpoint);
    return true;
  }

  /** An attempt answered: that is the outcome. */
  private handleAnswer(f: InFlight, value: R): void {
    if (this.state === 'done' || f.abandoned) return;
    this.inFlight.delete(f);
    this.attempts.push(this.record(f, status.OK, ''));
    this.finish({ ok: true, value, endpoint: f.endpoint, attempts: this.attempts });
  }

  /**
   * An attempt failed: the caller's error is the answer; a retryable one (UNAVAILABLE, RESOURCE_EXHAUSTED,
   * an attempt's DEADLINE_EXCEEDED) moves on to the next endpoint — for a write only when it surely never
   * reached the peer — then to the reconnect wait, then fails with what was tried.
   */
  private handleFailure(f: InFlight, err: ServiceError): void {
    if (this.state === 'done' || f.abandoned) return;
    this.inFlight.delete(f);
    const code = typeof err.code === 'number' ? err.code : status.UNKNOWN;
    const message = err.details || err.message || codeName(code);
    this.attempts.push(this.record(f, code, message));
    const unreached = neverReachedPeer(err);
    this.noneReached &&= unreached;
    if (!isFailoverCode(code) || !(this.opts.idempotent || unreached)) {
      // The caller's error is the answer; a possibly-delivered write is never sent twice.
      if (this.inFlight.size === 0 || !isFailoverCode(code)) this.fail(code, message);
      return;
    }
    if (code === status.RESOURCE_EXHAUSTED && this.opts.busyRetryBudget?.tryWithdraw() === false) {
      // A busy peer's refusal, and no retry token: the refusal is the answer (an attempt in flight may still win).
      if (this.inFlight.size === 0) this.fail(code, message);
      return;
    }
    if (this.launch(false) || this.inFlight.size > 0 || this.maybeWaitForReconnect()) return;
    const out = this.opts.deadline - this.now() <= 0;
    // A reconnect wait that ran out means no peer could be reached: unavailable, not slow.
    this.fail(
      out ? status.DEADLINE_EXCEEDED : f.waited ? status.UNAVAILABLE : code,
      `${out ? 'deadline exceeded' : `all ${this.attempts.length} attempts failed`} for ${targetName(this.opts.target)}: ${this.summary()}`,
    );
  }

  /**
   * A hedge may follow an attempt (the twin asked can be stuck too), after the delay of the attempt it
   * backs up: the endpoint's p95, never more than half the attempt timeout (a p95 inflated by a few old
   * outliers would leave a frozen endpoint unhedged until it times out). At most MAX_HEDGES_PER_REQUEST.
   */
  private maybeArmHedge(endpoint: Endpoint): void {
    const { opts } = this;
    if (!this.hedging || this.hedges >= MAX_HEDGES_PER_REQUEST || this.next >= this.order.length) return;
    if (this.hedgeTimer) return;
    const delay =
      opts.hedge!.delayMs ?? hedgeDelayMs(opts.source.latencyP95Ms?.(endpoint), opts.attemptTimeoutMs);
    this.hedgeTimer = setTimeout(() => this.handleHedgeDelay(), delay);
  }

  /**
   * An attempt outlived its hedge delay: hedge it (unless every attempt in flight was acknowledged, see
   * onlyUnacknowledged), or, with no token left, plan a switch from a silent one.
   */
  private handleHedgeDelay(): void {
    this.hedgeTimer = undefined;
    const hedge = this.opts.hedge!;
    if (this.state === 'done' || this.inFlight.size === 0) return;
    if (hedge.onlyUnacknowledged && [...this.inFlight].every((x) => x.acknowledged())) return;
    if (hedge.budget.tryWithdraw()) {
      this.hedges++;
      this.launch(true);
      return;
    }
    if (!hedge.onlyUnacknowledged || this.switched || hedge.budget.saturated()) return;
    const silent = [...this.inFlight].find((x) => !x.acknowledged());
    const floor = silent && this.opts.source.latencyFloorMs?.(silent.endpoint);
    if (!silent || floor === undefined) return;
    const afterMs = Math.round(2 * floor + SILENT_SLACK_MS);
    const wait = Math.max(0, silent.started + afterMs - this.now());
    this.switchTimer = setTimeout(() => this.maybeSwitchFromSilent(silent, afterMs), wait);
  }

  /**
   * No token for a hedge, and an attempt still unacknowledged when an acknowledgement was surely due
   * (twice its endpoint's fastest usual answer, plus slack): its peer is silent (frozen, unreachable). It
   * is cancelled and the next endpoint asked instead — a switch, not a duplicate, so it adds no load and
   * needs no budget. At most one per request.
   */
  private maybeSwitchFromSilent(silent: InFlight, afterMs: number): void {
    this.switchTimer = undefined;
    if (this.state === 'done' || silent.acknowledged() || !this.inFlight.has(silent)) return;
    if (this.next >= this.order.length) return;
    this.switched = true;
    silent.abandoned = true;
    this.inFlight.delete(silent);
    silent.cancel();
    this.attempts.push(
      this.record(
        silent,
        status.DEADLINE_EXCEEDED,
        `not acknowledged within ${afterMs} ms: asked a twin instead`,
      ),
    );
    this.launch(false);
  }

  /** The caller's signal fired: the overall deadline (DEADLINE_EXCEEDED, attempts cut off) or a cancel. */
  private handleAbort(): void {
    const { target, signal } = this.opts;
    if (signal?.reason instanceof DeadlineReached) {
      const tried = this.attempts.length ? `: ${this.summary()}` : '';
      return this.fail(
        status.DEADLINE_EXCEEDED,
        `deadline exceeded for ${targetName(target)}${tried} (cut off by the overall deadline)`,
      );
    }
    this.fail(status.CANCELLED, 'cancelled by the caller');
  }

  private record(f: InFlight, code: number, message: string): AttemptRecord {
    return {
      brokerId: f.endpoint.brokerId,
      address: f.endpoint.address,
      code,
      message,
      latencyMs: this.now() - f.started,
      hedged: f.hedged,
    };
  }

  private summary(): string {
    return this.attempts
      .map((a) => `${a.brokerId}: ${codeName(a.code)}${a.message ? ` (${a.message})` : ''}`)
      .join('; ');
  }
}

function targetName(t: TargetList): string {
  return t.pod ? `${t.site}/${t.pod}` : t.site;
}
