/**
 * The serving side of federation sessions: each session a peer opens is one bidirectional stream whose
 * request frames are served as calls of their own (through the same middleware as unary calls: admission,
 * authorization, faults, the acknowledgement, a log line, metrics and a span each), answered by frames of
 * the same id. A large answer goes in pieces, interleaved with the others (see {@link Outbox}).
 */
import * as grpc from '@grpc/grpc-js';
import {
  FederationServiceService,
  type LocalRequest,
  type LocalResponse,
  type PodResult,
  type SessionAnswer,
  type SessionFrame,
  type SiteRequest,
  type SiteResponse,
} from '@wanas/proto';
import { toBrokerError } from '../errors';
import { answerFrames } from './frames';
import { ServedFrame, type FrameSession } from './served-frame';

/** How a session's requests are served: as the unary calls they stand for; rejects with the status to send. */
export interface SessionHandlers {
  site(call: ServedFrame, req: SiteRequest, onPod?: (pod: PodResult) => void): Promise<SiteResponse>;
  local(call: ServedFrame, req: LocalRequest): Promise<LocalResponse>;
}

/** What the session server needs. */
export interface SessionServerDeps {
  handlers: SessionHandlers;
  /** Throws (a BrokerError) unless the caller is a broker of the federation. */
  authorize(call: grpc.ServerDuplexStream<SessionFrame, unknown>): void;
  /** Largest piece of an answer in one frame (default: frames.ts's PART_BYTES). */
  partBytes?: number;
}

/** FederationService as served: a session's answers are written already encoded (see frames.ts). */
export const FEDERATION_SERVICE = {
  ...FederationServiceService,
  session: { ...FederationServiceService.session, responseSerialize: (v: Buffer) => v },
} as unknown as grpc.ServiceDefinition;

/** A session's stream as served: answers are written pre-encoded (see {@link FEDERATION_SERVICE}). */
export type SessionStream = grpc.ServerDuplexStream<SessionFrame, Buffer>;

/** The sessions a broker serves. */
export class SessionServer {
  private readonly open = new Set<ServedSession>();
  private draining = false;

  constructor(private readonly deps: SessionServerDeps) {}

  /** The grpc-js handler of FederationService/Session. */
  readonly handle = (call: SessionStream): void => {
    if (this.draining) {
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'broker stopping' });
      return;
    }
    try {
      this.deps.authorize(call);
    } catch (e) {
      const err = toBrokerError(e);
      call.emit('error', { code: err.code, details: err.details });
      return;
    }
    const session = new ServedSession(call, this.deps, () => this.open.delete(session));
    this.open.add(session);
    session.start();
  };

  /** Sessions served now. */
  get size(): number {
    return this.open.size;
  }

  /** Stopping: no new session or request; each session ends once its requests in flight are answered. */
  drain(): void {
    this.draining = true;
    for (const s of this.open) s.drain();
  }
}

/** One served session: its requests in flight by id, and the outbox of its answers. */
class ServedSession implements FrameSession {
  private readonly inFlight = new Map<number, ServedFrame>();
  private readonly outbox: Outbox;
  /** No new requests (the peer half-closed, or this broker is stopping); ends once idle. */
  private ending = false;
  private closed = false;

  constructor(
    private readonly call: SessionStream,
    private readonly deps: SessionServerDeps,
    private readonly onClose: () => void,
  ) {
    this.outbox = new Outbox(
      call,
      () => !this.closed,
      () => this.endIfIdle(),
    );
  }

  start(): void {
    const { call } = this;
    call.sendMetadata(new grpc.Metadata()); // the session is open
    call.on('data', (frame: SessionFrame) => this.take(frame));
    call.on('end', () => this.drain());
    call.on('cancelled', () => this.abort());
    call.on('error', () => this.abort());
  }

  getPeer(): string {
    return this.call.getPeer();
  }

  getAuthContext(): ReturnType<FrameSession['getAuthContext']> {
    return this.call.getAuthContext();
  }

  ack(id: number): void {
    this.send({ id, answer: { $case: 'ack', ack: {} } });
  }

  drain(): void {
    this.ending = true;
    this.endIfIdle();
  }

  /** One frame from the peer: a request to serve, or a cancel. */
  private take(frame: SessionFrame): void {
    const kind = frame.frame?.$case;
    if (kind === 'cancel') return this.inFlight.get(frame.id)?.cancel();
    if (kind !== 'site' && kind !== 'local')
      return this.fail(frame.id, grpc.status.INVALID_ARGUMENT, 'empty frame');
    if (this.ending)
      return this.fail(frame.id, grpc.status.UNAVAILABLE, 'broker stopping; send it elsewhere');
    if (this.inFlight.has(frame.id)) {
      return this.fail(frame.id, grpc.status.INVALID_ARGUMENT, `request id ${frame.id} is already in flight`);
    }
    const served = new ServedFrame(this, frame);
    this.inFlight.set(frame.id, served);
    // The handlers reject with the status a unary call would end with (the middleware maps every error).
    this.serve(served).then(
      (answer) => this.finish(served, answer),
      (st: grpc.StatusObject) =>
        this.finish(served, statusAnswer(frame.id, st.code, st.details, st.metadata)),
    );
  }

  /** Runs the request's handler; resolves with its last answer frame. */
  private async serve(served: ServedFrame): Promise<SessionAnswer> {
    const { frame } = served;
    const { handlers } = this.deps;
    if (frame.frame?.$case === 'local') {
      const local = await handlers.local(served, frame.frame.local);
      return { id: frame.id, answer: { $case: 'local', local } };
    }
    const req = (frame.frame as { site: SiteRequest }).site;
    const onPod = frame.stream
      ? (pod: PodResult) => this.answer(served, { id: frame.id, answer: { $case: 'pod', pod } })
      : undefined;
    const site = await handlers.site(served, req, onPod);
    // Streamed, the pods went one by one: the last frame is the site's answer without them again.
    return { id: frame.id, answer: { $case: 'site', site: onPod ? { ...site, pods: [] } : site } };
  }

  private finish(served: ServedFrame, last: SessionAnswer): void {
    served.done();
    this.answer(served, last);
    this.inFlight.delete(served.id);
    this.endIfIdle();
  }

  /** Sends an answer frame of a request still wanted (not cancelled, session open). */
  private answer(served: ServedFrame, answer: SessionAnswer): void {
    if (!served.cancelled) this.send(answer);
  }

  private fail(id: number, code: grpc.status, details: string): void {
    this.send(statusAnswer(id, code, details));
  }

  private send(answer: SessionAnswer): void {
    if (this.closed) return;
    this.outbox.send(answerFrames(answer, this.deps.partBytes));
  }

  private endIfIdle(): void {
    if (this.closed || !this.ending || this.inFlight.size > 0 || !this.outbox.empty) return;
    this.close();
    this.call.end();
  }

  /** The stream broke or the peer went: every request in flight is cancelled (its work stops). */
  private abort(): void {
    if (this.closed) return;
    this.close();
    for (const served of this.inFlight.values()) served.cancel();
  }

  private close(): void {
    this.closed = true;
    this.onClose();
  }
}

/** A failed request's frame, from the status its call would have ended with. */
function statusAnswer(id: number, code: grpc.status, details: string, md?: grpc.Metadata): SessionAnswer {
  const bin = md?.get('grpc-status-details-bin')[0];
  const statusDetails = Buffer.isBuffer(bin) ? bin : Buffer.alloc(0);
  return { id, answer: { $case: 'status', status: { code, message: details, details: statusDetails } } };
}

/**
 * A session's outgoing frames. A one-frame answer is written at once; the pieces of large answers are
 * written one at a time, taking turns, each after the one before has gone to the transport: the frames
 * written meanwhile (small answers, acks) go ahead of the next piece, so no answer waits for a large one.
 */
class Outbox {
  private readonly large: Buffer[][] = [];
  private writing = false;

  constructor(
    private readonly call: SessionStream,
    private readonly open: () => boolean,
    private readonly drained: () => void,
  ) {}

  get empty(): boolean {
    return !this.writing && this.large.length === 0;
  }

  send(frames: Buffer[]): void {
    if (frames.length === 1) {
      this.call.write(frames[0]!);
      return;
    }
    this.large.push(frames);
    this.pump();
  }

  private pump(): void {
    if (this.writing) return;
    const next = this.large.shift();
    if (!next || !this.open()) {
      this.large.length = 0;
      return this.drained();
    }
    const piece = next.shift()!;
    if (next.length) this.large.push(next);
    this.writing = true;
    this.call.write(piece, () => {
      this.writing = false;
      this.pump();
    });
  }
}
