import { status } from '@grpc/grpc-js';
import { DeadlineReached } from '@wanas/iterator';
import { BrokerError } from '../errors';

/**
 * The error an operation throws when its signal is aborted: DEADLINE_EXCEEDED when the overall deadline was
 * reached, CANCELLED otherwise (the caller gave up, or a hedge twin answered first).
 */
export function abortedError(signal: AbortSignal): BrokerError {
  return signal.reason instanceof DeadlineReached
    ? new BrokerError(status.DEADLINE_EXCEEDED, 'stopped: the overall deadline was reached')
    : new BrokerError(status.CANCELLED, 'stopped: the request was cancelled');
}

/** Waits `ms`, or rejects with {@link abortedError} as soon as `signal` is aborted. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(abortedError(signal));
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortedError(signal));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
