/**
 * One execution shared by every identical request in flight at once (Go's `singleflight`, with each
 * caller's own cancel and deadline). The first caller starts it; later ones join it. Each caller gets
 * the execution's answer, or leaves early:
 * - a caller that cancels gets CANCELLED, and the execution goes on for the others; it is cancelled when
 *   its last caller has gone;
 * - a caller whose deadline comes before the execution's gets DEADLINE_EXCEEDED at its own deadline,
 *   without cutting the others short (a caller with a later deadline simply gets the answer when it comes).
 * A streamed caller that joins late is given the pods already final, then the rest as they come.
 */
import { status } from '@grpc/grpc-js';
import { workDeadline, type CancelListener } from '../../call-context';
import { BrokerError } from '../../errors';

/** Where a flight is: running (callers may join), or settled (its answer given to every caller left). */
export type FlightState = 'running' | 'settled';

/** One caller of a flight. */
export interface FlightCaller<P> {
  /** The caller's cancel, listened for only once the execution needs a signal (most operations never do). */
  onCancel: CancelListener;
  /** When the caller needs its answer by (epoch ms; undefined: no deadline of its own). */
  end: number | undefined;
  /** A streamed caller: each pod's result as soon as it is final. */
  onPod?: (pod: P) => void;
}

/** What the execution is given: a signal aborted once every caller has gone, and where to report pods. */
export interface Execution<P> {
  readonly signal: AbortSignal;
  report(pod: P): void;
}

/** A caller's answer: the execution's value, and whether it joined another caller's execution. */
export interface Shared<T> {
  value: T;
  joined: boolean;
}

interface Joined<P> {
  caller: FlightCaller<P>;
  /** Takes the caller out (with the error it is answered, if it leaves before the answer). */
  leave(error?: BrokerError): void;
  /** Stops watching the caller's cancel (set once it is watched). */
  unwatch?: () => void;
}

/** The shared execution (see the file's comment). */
export class Flight<T, P = never> {
  private state: FlightState = 'running';
  private readonly callers = new Set<Joined<P>>();
  private controller: AbortController | undefined;
  /** Every caller has gone while it ran: its signal is (or will be made) aborted. */
  private abandoned = false;
  private readonly pods: P[] = [];
  private readonly answer: Promise<T>;
  /** Resolves once the execution has answered (either way). */
  readonly settled: Promise<void>;

  /**
   * Starts `run` now. `id` names the execution (its correlation id); `end` is when it answers by (its first
   * caller's deadline).
   */
  constructor(
    readonly id: string,
    readonly end: number | undefined,
    run: (exec: Execution<P>) => Promise<T>,
  ) {
    const signal = () => this.signal();
    this.answer = run({
      get signal() {
        return signal();
      },
      report: (pod) => this.report(pod),
    });
    const settle = () => this.transition('running', 'settled');
    this.settled = this.answer.then(settle, settle);
  }

  /** Whether callers may still join. */
  get running(): boolean {
    return this.state === 'running';
  }

  /** Callers waiting on it now. */
  get size(): number {
    return this.callers.size;
  }

  /** Adds a caller: resolves with the execution's answer, or rejects when the caller leaves first. */
  join(caller: FlightCaller<P>, joined: boolean): Promise<Shared<T>> {
    for (const pod of this.pods) caller.onPod?.(pod);
    return new Promise<Shared<T>>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const entry: Joined<P> = {
        caller,
        leave: (error) => {
          if (!this.callers.delete(entry)) return;
          if (timer) clearTimeout(timer);
          entry.unwatch?.();
          if (error) reject(error);
          if (this.callers.size === 0 && this.state === 'running') {
            this.abandoned = true;
            this.controller?.abort();
          }
        },
      };
      this.callers.add(entry);
      if (this.controller) this.watch(entry);
      // A deadline before the execution's: this caller alone is answered DEADLINE_EXCEEDED then.
      if (caller.end !== undefined && (this.end === undefined || caller.end < this.end)) {
        const at = workDeadline(caller.end, Date.now());
        timer = setTimeout(
          () =>
            entry.leave(
              new BrokerError(
                status.DEADLINE_EXCEEDED,
                `deadline reached while waiting for the shared execution ${this.id}`,
              ),
            ),
          Math.max(0, at - Date.now()),
        );
      }
      this.answer.then(
        (value) => {
          if (this.callers.has(entry)) resolve({ value, joined });
          entry.leave();
        },
        (e: unknown) => {
          if (this.callers.has(entry)) reject(e);
          entry.leave();
        },
      );
    });
  }

  /** The execution's signal, made when it first asks: from then on every caller's cancel is watched. */
  private signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      for (const entry of this.callers) this.watch(entry);
      if (this.abandoned) this.controller.abort();
    }
    return this.controller.signal;
  }

  /** Makes a caller's cancel take it out of the flight. */
  private watch(entry: Joined<P>): void {
    entry.unwatch = entry.caller.onCancel(() =>
      entry.leave(new BrokerError(status.CANCELLED, 'the caller cancelled the call')),
    );
  }

  private report(pod: P): void {
    if (this.state !== 'running') return;
    this.pods.push(pod);
    for (const entry of this.callers) entry.caller.onPod?.(pod);
  }

  /** The one place the state changes, from the state given only. */
  private transition(from: FlightState, to: FlightState): void {
    if (this.state !== from) return;
    this.state = to;
  }
}
