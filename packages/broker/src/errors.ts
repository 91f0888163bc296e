import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { DeadlineReached } from '@wanas/iterator';
import { codeName } from '@wanas/proto';

/**
 * The one error type handlers throw: a gRPC status `code`, `details` safe to show the caller, and an
 * internal `cause` that is logged but never sent.
 */
export class BrokerError extends Error {
  /** A serialized google.rpc.Status sent as the `grpc-status-details-bin` trailer (rich error details). */
  statusDetails: Uint8Array | undefined;
  /** A load refusal's retry pushback, sent as the `grpc-retry-pushback-ms` trailer (gRPC A6). */
  pushbackMs: number | undefined;

  constructor(
    readonly code: status,
    readonly details: string,
    override readonly cause?: unknown,
  ) {
    super(`${codeName(code)}: ${details}`);
    this.name = 'BrokerError';
  }

  /** The error as grpc-js sends it. */
  toServiceError(): Partial<ServiceError> {
    return { code: this.code, details: this.details, metadata: new Metadata() };
  }
}

/** RESOURCE_EXHAUSTED for load, with the retry pushback a well-behaved client honours. */
export function overloaded(message: string, pushbackMs: number): BrokerError {
  const err = new BrokerError(status.RESOURCE_EXHAUSTED, message);
  err.pushbackMs = pushbackMs;
  return err;
}

/** INVALID_ARGUMENT naming the bad field. */
export function invalidArgument(field: string, problem: string): BrokerError {
  return new BrokerError(status.INVALID_ARGUMENT, `${field}: ${problem}`);
}

/** Maps anything thrown to a BrokerError; unknown errors become INTERNAL without leaking their text. */
export function toBrokerError(e: unknown): BrokerError {
  if (e instanceof BrokerError) return e;
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'number' && code > 0 && code <= 16) {
    return new BrokerError(code, (e as { details?: string }).details ?? (e as Error).message, e);
  }
  return new BrokerError(status.INTERNAL, 'internal error (see the broker log)', e);
}

/**
 * The error for work whose signal was aborted (an operation, a store statement): DEADLINE_EXCEEDED when the overall deadline was
 * reached, CANCELLED otherwise (the caller gave up, or a hedge twin answered first).
 */
export function abortedError(signal: AbortSignal): BrokerError {
  return signal.reason instanceof DeadlineReached
    ? new BrokerError(status.DEADLINE_EXCEEDED, 'stopped: the overall deadline was reached')
    : new BrokerError(status.CANCELLED, 'stopped: the request was cancelled');
}
