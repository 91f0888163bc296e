/**
 * The calling side of one federation session: a bidirectional stream to a peer broker on which requests go
 * as frames with an id and come back as answer frames of that id. Each request is a {@link CancellableCall}
 * like a unary call's: its own deadline (a timer here; the peer's from the frame's timeout), its cancel
 * (a cancel frame), its acknowledgement (an ack frame). A session that breaks fails every request in flight
 * on it at once with UNAVAILABLE, as a broken connection fails its calls: an attempt failure, after which
 * the iterator moves on; a write's outcome is then unknown, as for a unary call. At most `maxInFlight`
 * requests are in flight; more wait their turn (back-pressure), their deadlines running.
 */
import {
  connectivityState,
  status,
  type ClientDuplexStream,
  type ServiceError,
  type StatusObject,
} from '@grpc/grpc-js';
import type { CancellableCall } from '@wanas/iterator';
import type { FederationServiceClient, PodResult, SessionAnswer, SessionFrame } from '@wanas/proto';
import { PartJoiner, sessionError } from './frames';

/**
 * `opening`: the stream is asked for, the peer has not answered; `open`: the peer sent its headers (it
 * serves sessions), requests go; `closed`: ended, broken or refused, for good (a new session replaces it).
 */
export type PeerSessionState = 'opening' | 'open' | 'closed';

/** What a request carries besides its id and timeout. */
export type SessionRequest = Pick<SessionFrame, 'frame' | 'stream' | 'traceparent'>;

/** One request of the session, from its send (or its wait for a turn) to its end. */
interface Pending {
  id: number;
  frame: SessionFrame;
  deadline: number;
  acked: boolean;
  /** Over (answered, failed, cancelled, timed out): nothing more happens to it. */
  ended: boolean;
  timer: NodeJS.Timeout;
  onPod?: (pod: PodResult) => void;
  resolve(answer: SessionAnswer): void;
  reject(err: ServiceError): void;
}

/** Options of a {@link PeerSession}. */
export interface PeerSessionOptions {
  /** Requests in flight at most; more wait. */
  maxInFlight: number;
  /** Called once when the session closes: `err` is why (a clean end by the peer is UNAVAILABLE too). */
  onClosed(session: PeerSession, err: ServiceError): void;
}

/** One session to a peer broker. */
export class PeerSession {
  private stateNow: PeerSessionState = 'opening';
  private readonly stream: ClientDuplexStream<SessionFrame, SessionAnswer>;
  private readonly inFlight = new Map<number, Pending>();
  private readonly waiting: Pending[] = [];
  private readonly parts = new PartJoiner();
  private nextId = 1;
  /** {@link close} was called. */
  private closing = false;

  constructor(
    client: FederationServiceClient,
    private readonly opts: PeerSessionOptions,
  ) {
    this.stream = client.session();
    this.stream.on('metadata', () => this.transition('open'));
    this.stream.on('data', (answer: SessionAnswer) => this.take(answer));
    this.stream.on('error', () => undefined); // the status says it, below
    this.closeWithChannel(client.getChannel());
    this.stream.on('status', (st: StatusObject) =>
      this.broken(
        st.code === status.OK
          ? sessionError(status.UNAVAILABLE, 'the peer ended the session')
          : sessionError(st.code, st.details),
      ),
    );
  }

  get state(): PeerSessionState {
    return this.stateNow;
  }

  /** Requests in flight or waiting for their turn. */
  get load(): number {
    return this.inFlight.size + this.waiting.length;
  }

  /** Sends one request (or queues it while `maxInFlight` are in flight); its promise has its final answer frame. */
  request(
    req: SessionRequest,
    deadline: Date,
    onPod?: (pod: PodResult) => void,
  ): CancellableCall<SessionAnswer> {
    let pending!: Pending;
    const promise = new Promise<SessionAnswer>((resolve, reject) => {
      const id = this.nextId++;
      const ms = Math.max(1, deadline.getTime() - Date.now());
      const timer = setTimeout(() => this.end(pending, status.DEADLINE_EXCEEDED, 'Deadline exceeded'), ms);
      const frame: SessionFrame = { ...req, id, timeoutMs: ms };
      pending = {
        id,
        frame,
        deadline: deadline.getTime(),
        acked: false,
        ended: false,
        timer,
        onPod,
        resolve,
        reject,
      };
    });
    if (this.stateNow === 'closed') this.end(pending, status.UNAVAILABLE, 'the session is closed');
    else if (this.inFlight.size < this.opts.maxInFlight) this.send(pending);
    else this.waiting.push(pending);
    return {
      promise,
      cancel: () => this.end(pending, status.CANCELLED, 'Cancelled on client'),
      acknowledged: () => pending.acked,
    };
  }

  /** Ends the session from this side: requests in flight fail (CANCELLED), the stream is cancelled. */
  close(): void {
    if (this.stateNow === 'closed') return;
    this.closing = true;
    this.broken(sessionError(status.CANCELLED, 'the session was closed'));
    this.stream.cancel();
  }

  /**
   * A channel closed (retired or dropped by the connection manager) may keep its connection for the
   * streams still on it: the session goes with its channel.
   */
  private closeWithChannel(channel: ReturnType<FederationServiceClient['getChannel']>): void {
    const watch = (state: connectivityState) => {
      if (this.stateNow === 'closed') return;
      if (state === connectivityState.SHUTDOWN) return this.close();
      channel.watchConnectivityState(state, Infinity, () => watch(channel.getConnectivityState(false)));
    };
    watch(channel.getConnectivityState(false));
  }

  /** The one place the state changes. */
  private transition(next: PeerSessionState): boolean {
    if (this.stateNow === 'closed' || this.stateNow === next) return false;
    this.stateNow = next;
    return true;
  }

  private send(p: Pending): void {
    p.frame.timeoutMs = Math.max(1, p.deadline - Date.now()); // the time it waited its turn is spent
    this.inFlight.set(p.id, p);
    this.stream.write(p.frame);
  }

  /** One answer frame: an ack, a streamed pod, a piece, or the request's end. */
  private take(answer: SessionAnswer): void {
    const p = this.inFlight.get(answer.id);
    const a = answer.answer;
    if (!p || !a) return; // a request that ended here (cancelled, timed out): its late frames are dropped
    switch (a.$case) {
      case 'ack':
        p.acked = true;
        return;
      case 'pod':
        p.onPod?.(a.pod);
        return;
      case 'part': {
        const whole = this.parts.add(answer.id, a.part.data, a.part.last);
        if (whole) this.take(whole);
        return;
      }
      case 'status':
        return this.end(p, a.status.code, a.status.message, a.status.details);
      default:
        this.takeOut(p);
        p.resolve(answer);
    }
  }

  /** Ends a request with an error; a request the peer still works on gets a cancel frame. */
  private end(p: Pending, code: status, details: string, statusDetails?: Uint8Array): void {
    const wasInFlight = this.inFlight.has(p.id);
    if (!this.takeOut(p)) return;
    const gaveUp = code === status.CANCELLED || code === status.DEADLINE_EXCEEDED;
    if (wasInFlight && gaveUp && this.stateNow !== 'closed') this.stream.write(cancelFrame(p.id));
    p.reject(sessionError(code, details, statusDetails));
  }

  /** Takes the request out (and lets a waiting one go); false when it had already ended. */
  private takeOut(p: Pending): boolean {
    if (p.ended) return false;
    p.ended = true;
    clearTimeout(p.timer);
    if (this.inFlight.delete(p.id)) {
      this.parts.drop(p.id);
      const next = this.waiting.shift();
      if (next && this.stateNow !== 'closed') this.send(next);
      return true;
    }
    const at = this.waiting.indexOf(p);
    if (at >= 0) this.waiting.splice(at, 1);
    return true;
  }

  /** The stream ended or broke: every request fails at once with its reason (UNAVAILABLE unless cancelled). */
  private broken(err: ServiceError): void {
    if (!this.transition('closed')) return;
    // Closed from this side, its requests are cancelled; broken from the other, they are attempt failures.
    const code = this.closing ? status.CANCELLED : status.UNAVAILABLE;
    const why = `session broken: ${err.details || err.message}`;
    for (const p of [...this.inFlight.values(), ...this.waiting]) this.end(p, code, why);
    this.opts.onClosed(this, err);
  }
}

/** The frame that cancels request `id`. */
const cancelFrame = (id: number): SessionFrame => ({
  id,
  frame: { $case: 'cancel', cancel: {} },
  stream: false,
  timeoutMs: 0,
  traceparent: '',
});
