import { Code } from './codes';

/**
 * The error an operation throws for an answer that is not a result: `code` (a gRPC status code, see
 * {@link Code}) and a message the caller sees. Anything else an operation throws is the pod's INTERNAL,
 * with its text kept in the broker's log and away from the caller.
 */
export class OperationError extends Error {
  constructor(
    readonly code: number,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'OperationError';
  }

  /** grpc-js' field name for the message, so the broker maps this error like any status. */
  get details(): string {
    return this.message;
  }
}

/** DEADLINE_EXCEEDED when the deadline has passed, else CANCELLED: what a stopped operation answers. */
export function stoppedError(deadline: number, now = Date.now()): OperationError {
  return now >= deadline
    ? new OperationError(Code.DEADLINE_EXCEEDED, 'stopped: the deadline was reached')
    : new OperationError(Code.CANCELLED, 'stopped: the request was cancelled');
}
