/**
 * What a call to a pod's backend shares, whichever its protocol: the headers it carries (correlation id,
 * traceparent, forwarded headers, idempotency key) and how its end is told apart (our cancel, the
 * deadline, the backend's own answer).
 */
import { status } from '@grpc/grpc-js';
import type { OperationContext } from '@wanas/operations';
import { BrokerError } from '../errors';
import { abortedError } from '../errors';

/** The request's context a backend call needs. */
export type BackendCallContext = Pick<
  OperationContext,
  'correlationId' | 'headers' | 'idempotencyKey' | 'deadline' | 'signal' | 'traceparent'
>;

/** Header names that a request's forwarded headers may not set on a backend call (ours, or the transport's). */
const RESERVED =
  /^(x-correlation-id|traceparent|tracestate|idempotency-key|grpc-.*|:.*|content-.*|host|te|connection|transfer-encoding|user-agent|authorization)$/i;
/** What a header name must look like to be sent on (HTTP/2 and HTTP/1.1 token, lower case). */
const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;

/** The headers a backend call carries, lower-case names. Forwarded headers never replace ours. */
export function backendHeaders(ctx: BackendCallContext, write: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(ctx.headers)) {
    const name = k.toLowerCase();
    if (!HEADER_NAME.test(name) || RESERVED.test(name) || name.endsWith('-bin') || /[\r\n]/.test(v)) continue;
    out[name] = v;
  }
  out['x-correlation-id'] = ctx.correlationId;
  if (ctx.traceparent) out.traceparent = ctx.traceparent;
  if (write && ctx.idempotencyKey) out['idempotency-key'] = ctx.idempotencyKey;
  return out;
}

/** The error for a call stopped by our side: the request's own cancel or deadline. */
export function stoppedByUs(ctx: BackendCallContext): BrokerError {
  if (ctx.signal.aborted) return abortedError(ctx.signal);
  return new BrokerError(
    status.DEADLINE_EXCEEDED,
    "the pod attempt's deadline was reached before the backend answered",
  );
}
