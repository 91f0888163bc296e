import { status } from '@grpc/grpc-js';
import { DeadlineReached } from '@wanas/iterator';
import { sleep as sdkSleep } from '@wanas/operations';
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

/** Waits `ms`, or rejects with {@link abortedError} as soon as `signal` is aborted (the SDK's sleep). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return sdkSleep(ms, signal).catch((e: unknown) => {
    throw signal.aborted ? abortedError(signal) : e;
  });
}
