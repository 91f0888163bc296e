import * as grpc from '@grpc/grpc-js';
import { PUSHBACK_HEADER, codeName } from '@wanas/proto';
import { ROOT_CONTEXT, type Context, type Span } from '@opentelemetry/api';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'winston';
import { deadlineOf, type CallContext, type ServedCall } from '../call-context';
import { BrokerError, overloaded, toBrokerError } from '../errors';
import { isRefusal, type Admission, type Ticket } from './admission/admission';
import { clientName, isTicket, type ClientGate } from './admission/client-gate';
import type { BrokerMetrics, RequestKind } from '../telemetry/metrics';
import { isValidCorrelationId } from '../request-limits';
import { LogSampler } from '../telemetry/log-sampler';
import { ANONYMOUS, type BrokerSecurity, type CallerKind } from './security';
import { OFF_SPAN, endSpan, injectTraceparent, logIds, serverSpan } from '../telemetry/tracing';

/**
 * Faults a broker injects on purpose, for tests and benchmarks only (`wanas broker --inject-slow`):
 * `slowFederation` makes it slow to take up a share (`ratio`) of its federation requests, each waiting
 * `delayMs` before it is acknowledged and worked on, as a broker stalled by GC or overload would.
 */
export interface FaultInjection {
  slowFederation?: { ratio: number; delayMs: number };
}

/** What the middleware needs. */
export interface RpcDeps {
  log: Logger;
  metrics: BrokerMetrics;
  security: BrokerSecurity;
  /** Admission (adaptive limits, fair shares, deadlines, the fixed caps) of federation requests. */
  admission: Admission;
  /**
   * Admits client calls of the routes served as bytes (with `decode`) on their headers, before they are
   * decoded (see `admission/client-gate.ts`). Without it they are admitted by {@link admission} here.
   */
  gate?: ClientGate;
  faults?: FaultInjection;
  /** Called as each call is admitted (the saturation monitor measures only while calls arrive). */
  onCall?: () => void;
}

/** One RPC as the middleware sees it. */
export interface Route<Req> {
  service: string;
  method: string;
  type: 'unary' | 'server_stream';
  /** The request kind in logs and metrics. */
  kind: RequestKind;
  /** Who may call it: a client, or a broker of the topology. */
  caller: CallerKind;
  /** Never refused for the in-flight limit (AdminService: it must answer when the broker is saturated). */
  unlimited?: boolean;
  /** The request's correlation id; a client request without one gets a UUID here. */
  correlationId(req: Req): string;
  operation(req: Req): string;
  /** The broker a federation request says it comes from (else the transport peer is logged). */
  source?(req: Req): string;
  /** Send the response headers before the work: the caller then knows this broker is alive and on it. */
  acknowledge?: boolean;
  /** Echo the correlation id in the `x-correlation-id` trailer (client calls). */
  correlationTrailer?: boolean;
  /**
   * Set when the method is served with its request as bytes (`admission/client-gate.ts`, `rawRequests`):
   * decodes it once the call is admitted. Throws on bytes that are not a request.
   */
  decode?: (bytes: Uint8Array) => Req;
}

/** Largest message a broker accepts or sends, bytes. */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** Longest field value copied from a request into a log line. */
const LOG_FIELD_CHARS = 128;
/** One shared reason: `abort()` without one builds a DOMException (with a stack trace) on every call. */
const CANCELLED_BY_CALLER = new Error('the caller cancelled the call');

/**
 * The server's middleware: every RPC of AggregationService, FederationService and AdminService goes through it, so each
 * concern is said once — a {@link CallContext} per call, authorization then admission (in-flight limits),
 * injected faults, the acknowledgement, one log line and one metric per call, and the mapping of any
 * error to a gRPC status (with rich details when the error carries them). Handlers stay thin.
 */
export class Rpc {
  private readonly sampler = new LogSampler();
  constructor(private readonly deps: RpcDeps) {
    const slow = deps.faults?.slowFederation;
    if (slow) deps.log.warn('FAULT INJECTION: delaying some federation requests on purpose', slow);
  }

  /** A unary handler: `handle` answers; `fields` adds to the log line. */
  unary<Req, Res>(
    route: Route<Req>,
    handle: (req: Req, ctx: CallContext) => Promise<Res>,
    fields?: (req: Req, res: Res) => Record<string, unknown>,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const arrived = this.arrive(call, route);
      if (!('req' in arrived)) return callback(arrived);
      const { req, ticket } = arrived;
      this.serve(call, route, req, (ctx) => handle(req, ctx), fields, ticket).then(
        ([res, ctx]) => callback(null, res, this.trailer(route, ctx)),
        (status: grpc.StatusObject) => callback(status),
      );
    };
  }

  /** A server-streaming handler: `handle` writes through `write` and resolves with what the log line reports. */
  serverStream<Req, Out, Res>(
    route: Route<Req>,
    handle: (
      req: Req,
      ctx: CallContext,
      write: (msg: Out) => void,
      flushed: () => Promise<void>,
    ) => Promise<Res>,
    fields?: (req: Req, res: Res) => Record<string, unknown>,
  ): grpc.handleServerStreamingCall<Req, Out> {
    return (call) => {
      const arrived = this.arrive(call, route);
      if (!('req' in arrived)) return void call.emit('error', arrived);
      const { req, ticket } = arrived;
      let backlog = false;
      const write = (msg: Out) => {
        if (!call.cancelled) backlog = !call.write(msg) || backlog;
      };
      // Resolves once what was written has gone to the transport (or the call is over): a long stream
      // waits for its reader instead of buffering everything in memory.
      const flushed = () =>
        !backlog || call.cancelled
          ? Promise.resolve()
          : new Promise<void>((resolve) => {
              const done = () => {
                backlog = false;
                call.off('drain', done);
                call.off('cancelled', done);
                resolve();
              };
              call.on('drain', done);
              call.on('cancelled', done);
            });
      this.serve(call, route, req, (ctx) => handle(req, ctx, write, flushed), fields, ticket).then(
        ([, ctx]) => {
          if (!call.cancelled) call.end(this.trailer(route, ctx));
        },
        (status: grpc.StatusObject) => call.emit('error', status),
      );
    };
  }

  /** Maps anything thrown to the status sent: details, the correlation trailer, rich details when present. */
  status(e: unknown, correlationId: string): { err: BrokerError; status: grpc.StatusObject } {
    const err = toBrokerError(e);
    if (err.cause) this.deps.log.error('request failed', { correlationId, error: String(err.cause) });
    const metadata = correlationMetadata(correlationId);
    if (err.statusDetails) metadata.set('grpc-status-details-bin', Buffer.from(err.statusDetails));
    if (err.pushbackMs !== undefined) metadata.set(PUSHBACK_HEADER, String(err.pushbackMs));
    return { err, status: { code: err.code, details: err.details, metadata } };
  }

  /**
   * The request of a call: as grpc-js decoded it, or, for a route served as bytes, admitted by the gate on
   * its headers and then decoded (a refusal decodes nothing). Else the status that ends the call.
   */
  private arrive<Req>(
    call: ServedCall & { request: unknown },
    route: Route<Req>,
  ): { req: Req; ticket?: Ticket } | grpc.StatusObject {
    if (!route.decode) return { req: call.request as Req };
    const ticket = this.deps.gate?.(call, `/${route.service}/${route.method}`);
    if (ticket && !isTicket(ticket)) return ticket;
    try {
      return { req: route.decode(call.request as Uint8Array), ticket };
    } catch (e) {
      ticket?.release();
      const code = grpc.status.INVALID_ARGUMENT;
      this.deps.metrics.served(route.service, route.method, route.type, code, 0);
      const why = e instanceof Error ? e.message : String(e);
      return {
        code,
        details: `the ${route.method} request could not be decoded: ${why}`,
        metadata: new grpc.Metadata(),
      };
    }
  }

  /**
   * Context, admission, faults, acknowledgement, the handler, then one log line and metric; rejects with
   * the status to send. Public for the requests that come as session frames, served as calls of their own.
   * `ticket`: the client call's admission by the gate, when it was admitted before it was decoded.
   */
  async serve<Req, Res>(
    call: ServedCall,
    route: Route<Req>,
    req: Req,
    handle: (ctx: CallContext) => Promise<Res>,
    fields?: (req: Req, res: Res) => Record<string, unknown>,
    ticket?: Ticket,
  ): Promise<[Res, IncomingCall]> {
    const t0 = performance.now();
    const correlationId = route.correlationId(req);
    const ctx = new IncomingCall(call, correlationId, route.source?.(req));
    const traced = serverSpan(call.metadata, route.service, route.method, correlationId);
    ctx.span = traced.span;
    ctx.trace = traced.ctx;
    // The gate's ticket is this call's to release from here on, whatever happens next.
    let release: (() => void) | undefined = ticket && (() => ticket.release());
    try {
      release = this.admit(call, route, ctx, ticket);
      const delay = route.caller === 'broker' ? this.injectedDelay() : undefined;
      if (delay) await delay;
      if (route.acknowledge && !call.cancelled) call.sendMetadata(new grpc.Metadata());
      // The call's span is the parent of its fan-out attempts and its operation (passed in ctx.trace).
      const res = await handle(ctx);
      this.record(route, req, ctx, t0, grpc.status.OK, fields && (() => fields(req, res)));
      return [res, ctx];
    } catch (e) {
      const { err, status } = this.status(e, correlationId);
      this.record(route, req, ctx, t0, err.code, () => ({ error: err.details }));
      if (route.correlationTrailer && status.metadata) injectTraceparent(ctx.span, status.metadata);
      throw status;
    } finally {
      // A client call admitted by the gate holds its share until its answer is written (grpc-js writes it
      // in the callback that follows; the write completes within the next turn of the event loop), as its
      // adaptive limit expects. Freed before the write, the limit admitted more than the broker finished,
      // then fell: goodput at 2× capacity went from 0.89× to 0.23× on the overload bench.
      if (release && ticket) setImmediate(release);
      else release?.();
    }
  }

  /**
   * Authorization, then admission: a refused caller gets UNAUTHENTICATED / PERMISSION_DENIED, and work the
   * broker cannot take now RESOURCE_EXHAUSTED with a reason and a retry pushback, before any work. A client
   * call the gate admitted comes with its `admitted` ticket (released by `serve` if this throws). Returns
   * the release.
   */
  private admit<Req>(
    call: ServedCall,
    route: Route<Req>,
    ctx: IncomingCall,
    admitted: Ticket | undefined,
  ): () => void {
    let ticket = admitted;
    const who = this.deps.security.authorize(call, route.caller);
    if (route.caller === 'client')
      ctx.client =
        ticket?.client ?? clientName(who === ANONYMOUS ? undefined : who, call.metadata, () => ctx.peer);
    if (route.unlimited) return () => ticket?.release();
    this.deps.onCall?.();
    if (!ticket) {
      const cls = route.caller === 'client' ? 'aggregate' : 'federation';
      const decision = this.deps.admission.admit(
        cls,
        ctx.peer,
        ctx.deadline,
        cls === 'federation' ? 1 : undefined,
      );
      if (isRefusal(decision)) throw overloaded(decision.message, decision.pushbackMs);
      ticket = decision;
    }
    ctx.admitted = ticket;
    const held = ticket;
    return () => held.release();
  }

  /** Resolves at once, or late on purpose for the share of federation requests fault injection slows. */
  private injectedDelay(): Promise<void> | undefined {
    const slow = this.deps.faults?.slowFederation;
    if (!slow || Math.random() >= slow.ratio) return undefined;
    return new Promise((r) => setTimeout(r, slow.delayMs));
  }

  /**
   * One metric and one log line per call (its fields built only when the line is written); a call its
   * caller cancelled ends CANCELLED, whatever this hop made of it.
   */
  private record<Req>(
    route: Route<Req>,
    req: Req,
    ctx: IncomingCall,
    t0: number,
    answered: number,
    extra?: () => Record<string, unknown>,
  ): void {
    const code = ctx.cancelled ? grpc.status.CANCELLED : answered;
    ctx.finish();
    endSpan(ctx.span, code);
    // To the hundredth of a millisecond: a cache hit or a LocalRequest is served in well under one.
    const latencyMs = Math.round((performance.now() - t0) * 100) / 100;
    this.deps.metrics.served(route.service, route.method, route.type, code, latencyMs / 1000);
    const level = code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN ? 'error' : 'info';
    if (!this.deps.log.isLevelEnabled(level)) return;
    // Info lines are sampled past a budget a second (each written one counts those left out before it).
    const sampledOut = level === 'info' ? this.sampler.take() : 0;
    if (sampledOut === false) return;
    this.deps.log.log(level, 'served', {
      ...(sampledOut ? { sampledOut } : {}),
      correlationId: clip(ctx.correlationId),
      operation: clip(route.operation(req)),
      kind: route.kind,
      direction: 'in',
      peer: ctx.peer,
      code: codeName(code),
      latencyMs,
      ...logIds(ctx.span),
      ...extra?.(),
    });
  }

  /** A client call's trailer: `x-correlation-id`, and the `traceparent` of the entry's span when traced. */
  private trailer<Req>(route: Route<Req>, ctx: IncomingCall): grpc.Metadata | undefined {
    if (!route.correlationTrailer) return undefined;
    const md = correlationMetadata(ctx.correlationId);
    injectTraceparent(ctx.span, md);
    return md;
  }
}

/** A client request's correlation id, made when it has none (kept in the request for every later hop). */
export function fillCorrelationId(req: { correlationId: string }): string {
  if (!req.correlationId) req.correlationId = randomUUID();
  return req.correlationId;
}

/**
 * The {@link CallContext} of one incoming call: its deadline, the correlation id, who called, and a
 * signal aborted when the caller cancels. The signal (an AbortController, an EventTarget) is made only
 * when something asks for it — a fan-out or an operation that waits; most LocalRequests never do. Once
 * the call is answered ({@link finish}) a late "cancelled" (grpc-js reports one for some calls closed
 * after their answer was sent) changes nothing.
 */
class IncomingCall implements CallContext {
  readonly deadline: number | undefined;
  /** The caller cancelled before the answer. */
  cancelled = false;
  /** The call's server span (non-recording when tracing is off). */
  span: Span = OFF_SPAN;
  /** The context holding {@link span}, for the spans the call's work makes. */
  trace: Context = ROOT_CONTEXT;
  /** The call's admission (undefined for calls admission does not limit). */
  admitted: Ticket | undefined;
  /** Who the client is (client calls; see {@link CallContext.client}). */
  client: string | undefined;
  private controller: AbortController | undefined;
  private finished = false;
  private peerName: string | undefined;
  private cancelListeners: Set<() => void> | undefined;

  constructor(
    private readonly call: ServedCall,
    readonly correlationId: string,
    private readonly source: string | undefined,
  ) {
    this.deadline = deadlineOf(call);
    call.on('cancelled', () => this.handleCancelled());
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.cancelled) this.controller.abort(CANCELLED_BY_CALLER);
    }
    return this.controller.signal;
  }

  /** See {@link CallContext.onCancel}: a listener set, no AbortController. */
  onCancel(listener: () => void): () => void {
    if (this.cancelled) {
      queueMicrotask(listener);
      return () => undefined;
    }
    (this.cancelListeners ??= new Set()).add(listener);
    return () => this.cancelListeners?.delete(listener);
  }

  /** The broker the request names as its source, else the transport peer (asked for once). */
  get peer(): string {
    return (this.peerName ??= this.source || this.call.getPeer());
  }

  /** The answer (or error) is decided: a later cancel is only the stream closing. */
  finish(): void {
    this.finished = true;
  }

  private handleCancelled(): void {
    if (this.finished || this.cancelled) return;
    this.cancelled = true;
    this.controller?.abort(CANCELLED_BY_CALLER);
    const listeners = this.cancelListeners;
    this.cancelListeners = undefined;
    for (const l of listeners ?? []) l();
  }
}

/** The `x-correlation-id` trailer; left out when the id is not a valid one (it was refused). */
function correlationMetadata(id: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (isValidCorrelationId(id)) md.set('x-correlation-id', id);
  return md;
}

const clip = (s: string) => (s.length > LOG_FIELD_CHARS ? `${s.slice(0, LOG_FIELD_CHARS)}…` : s);
