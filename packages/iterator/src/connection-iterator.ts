import { AttemptLoop } from './attempt-loop';
import type { ConnectionIteratorOptions, IteratorOutcome } from './options';

export * from './calls';
export * from './options';

/**
 * Walks one request's target list: tries endpoints in the source's order, each attempt with an attempt
 * timeout capped by the overall deadline (propagated as the gRPC deadline); fails over on UNAVAILABLE,
 * RESOURCE_EXHAUSTED, an attempt's DEADLINE_EXCEEDED and connection errors; never on the caller's errors,
 * which are the answer. Optionally hedges idempotent requests within a budget. Every attempt is recorded.
 * Each run is an {@link AttemptLoop}, a state machine.
 */
export class ConnectionIterator<C, R> {
  private readonly now: () => number;

  constructor(private readonly opts: ConnectionIteratorOptions<C, R>) {
    this.now = opts.now ?? Date.now;
  }

  /** Runs the request to its outcome. Never rejects; never outlives the overall deadline. */
  run(): Promise<IteratorOutcome<R>> {
    return new AttemptLoop(this.opts, this.now).run();
  }
}
