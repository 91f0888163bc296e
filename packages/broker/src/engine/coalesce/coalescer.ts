/**
 * Identical requests in flight at once, by key: the first starts a {@link Flight}, the others join it.
 * One coalescer per request kind (Aggregate at the entry, SiteRequest at a representative, LocalRequest
 * at a pod).
 */
import { Flight, type Execution, type FlightCaller, type Shared } from './flight';

/** A caller's answer, and the execution it shared (its correlation id). */
export interface Coalesced<T> extends Shared<T> {
  from: string;
}

/** The flights of one request kind, by key. */
export class Coalescer<T, P = never> {
  private readonly flights = new Map<string, Flight<T, P>>();

  /**
   * Joins the running execution of `key`, or starts one with `start` (named `id`, answering by the
   * caller's end). Resolves with the caller's answer; rejects as the execution does, or when the caller
   * leaves first (its cancel, its own deadline).
   */
  run(
    key: string,
    id: string,
    caller: FlightCaller<P>,
    start: (exec: Execution<P>) => Promise<T>,
  ): Promise<Coalesced<T>> {
    const running = this.flights.get(key);
    if (running?.running) return running.join(caller, true).then((s) => ({ ...s, from: running.id }));
    const flight = new Flight<T, P>(id, caller.end, start);
    if (flight.running) {
      this.flights.set(key, flight);
      const forget = () => {
        if (this.flights.get(key) === flight) this.flights.delete(key);
      };
      flight.settled.then(forget, forget);
    }
    return flight.join(caller, false).then((s) => ({ ...s, from: id }));
  }

  /** The correlation id of the execution a request of `key` would join now, if any. */
  inFlight(key: string): string | undefined {
    const f = this.flights.get(key);
    return f?.running ? f.id : undefined;
  }

  /** Executions running now. */
  get size(): number {
    return this.flights.size;
  }
}
