/**
 * One request that came as a frame of a federation session, seen by the server's middleware as a call of
 * its own (`ServedCall`): its metadata (the frame's traceparent), its deadline (the frame's timeout from
 * its arrival), the session's peer and credentials, its acknowledgement (an ack frame) and its cancel (a
 * cancel frame, its deadline, or the session's end).
 */
import { Metadata, type Deadline } from '@grpc/grpc-js';
import type { SessionFrame } from '@wanas/proto';
import type { ServedCall } from '../call-context';

/** What a served frame needs of its session. */
export interface FrameSession {
  getPeer(): string;
  getAuthContext: ServedCall['getAuthContext'];
  /** Sends the request's acknowledgement (an ack frame). */
  ack(id: number): void;
}

/** A request of a session, as a call. */
export class ServedFrame implements ServedCall {
  readonly metadata = new Metadata();
  cancelled = false;
  private readonly deadline: number;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly listeners: (() => void)[] = [];

  constructor(
    private readonly session: FrameSession,
    readonly frame: SessionFrame,
  ) {
    if (frame.traceparent) this.metadata.set('traceparent', frame.traceparent);
    this.deadline = frame.timeoutMs ? Date.now() + frame.timeoutMs : Infinity;
    // Like a grpc-js server call, the request is cancelled at its deadline (its caller stopped waiting).
    if (frame.timeoutMs) {
      this.timer = setTimeout(() => this.cancel(), frame.timeoutMs);
      this.timer.unref();
    }
  }

  get id(): number {
    return this.frame.id;
  }

  getDeadline(): Deadline {
    return this.deadline;
  }

  getPeer(): string {
    return this.session.getPeer();
  }

  getAuthContext(): ReturnType<ServedCall['getAuthContext']> {
    return this.session.getAuthContext();
  }

  sendMetadata(): void {
    if (!this.cancelled) this.session.ack(this.frame.id);
  }

  on(_event: 'cancelled', listener: () => void): this {
    this.listeners.push(listener);
    return this;
  }

  /** The caller gave up (cancel frame, deadline, the session's end): the work stops; nothing more is sent. */
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.done();
    for (const l of this.listeners) l();
  }

  /** The request is over: its deadline timer goes. */
  done(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
