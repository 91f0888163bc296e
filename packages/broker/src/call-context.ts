/**
 * One context per incoming call (the idea of connect-es's `HandlerContext`): what every hop needs to
 * honour the caller — its deadline, its cancellation, the correlation id, who called — made once by the
 * server and passed through the dispatcher to every fan-out and operation.
 */

import type * as grpc from '@grpc/grpc-js';
import type { Context } from '@opentelemetry/api';

/**
 * What the middleware reads of an incoming call: a grpc-js server call, or one request of a federation
 * session (a frame, which acts as a call of its own: see `session/served-frame.ts`). The server's middleware
 * (`server/rpc.ts`) serves either.
 */
export interface ServedCall {
  readonly metadata: grpc.Metadata;
  readonly cancelled: boolean;
  getDeadline(): grpc.Deadline;
  getPeer(): string;
  getAuthContext(): ReturnType<grpc.ServerUnaryCall<unknown, unknown>['getAuthContext']>;
  sendMetadata(md: grpc.Metadata): void;
  on(event: 'cancelled', listener: () => void): unknown;
}

/** What the dispatcher knows of one incoming call. */
export interface CallContext {
  /** The request's correlation id (a fresh one when the caller sent none). */
  correlationId: string;
  /** The caller's gRPC deadline (epoch ms), or undefined when it set none. */
  deadline: number | undefined;
  /** Aborted when the caller cancels the call: every fan-out and operation it started stops. */
  signal: AbortSignal;
  /**
   * Calls `listener` once if the caller cancels; returns what stops listening. For a listener only, it
   * is cheaper than {@link signal} (no AbortController is made for the call).
   */
  onCancel?(listener: () => void): () => void;
  /** Who called: the source broker's id, or the transport peer (ip:port) of a client. */
  peer: string;
  /** The call's trace context (its server span): the parent of the spans its work makes (see tracing.ts). */
  trace: Context;
  /**
   * Who the client is (client calls only): its certificate CN or `token:<name>`, or in insecure mode the
   * `x-wanas-client` header, else the peer's host — the identity admission's fair shares and identical reads
   * go by (see `server/admission/client-gate.ts`).
   */
  client?: string;
  /** The call's admission: an Aggregate sets its cost (the pods its plan asks) here once planned. */
  admitted?: { setCost(pods: number): void };
}

/** Share of the time left that a hop keeps back, so its (partial) answer reaches its caller in time. */
export const MARGIN_SHARE = 0.1;
/** Smallest margin, ms: one answer's serialisation and a LAN hop on a busy machine. */
export const MARGIN_MIN_MS = 20;
/** Largest margin, ms: a WAN round trip between continents. */
export const MARGIN_MAX_MS = 250;

/**
 * The time by which a hop stops waiting and answers with what it has: `end` (the earlier of the caller's
 * gRPC deadline and the request's own budget) minus a margin of {@link MARGIN_SHARE} of the time left,
 * kept within {@link MARGIN_MIN_MS}..{@link MARGIN_MAX_MS} and never more than half the time left. The
 * margin covers what the hop cannot see: the request's trip to it (a gRPC timeout is relative, so the
 * caller's clock ran while it travelled) and the answer's trip back.
 */
export function workDeadline(end: number, now: number): number {
  const left = end - now;
  const margin = Math.min(MARGIN_MAX_MS, Math.max(MARGIN_MIN_MS, left * MARGIN_SHARE));
  return end - Math.min(margin, left / 2);
}

/** A call's gRPC deadline as epoch ms (undefined when it set none). */
export function deadlineOf(call: { getDeadline(): grpc.Deadline }): number | undefined {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) ? ms : undefined;
}

/** Listens for a cancel: `listener` runs once (soon, if already cancelled); the result stops listening. */
export type CancelListener = (listener: () => void) => () => void;

/** A signal's abort as a {@link CancelListener}. */
export function abortListener(signal: AbortSignal): CancelListener {
  return (listener) => {
    if (signal.aborted) {
      queueMicrotask(listener);
      return () => undefined;
    }
    signal.addEventListener('abort', listener, { once: true });
    return () => signal.removeEventListener('abort', listener);
  };
}

/**
 * How to hear a call's cancel: its own `onCancel` when it has one (no AbortController made), else its
 * signal's abort, read only when a listener is added.
 */
export function cancelListenerOf(ctx: CallContext): CancelListener {
  return (listener) => (ctx.onCancel ? ctx.onCancel(listener) : abortListener(ctx.signal)(listener));
}
