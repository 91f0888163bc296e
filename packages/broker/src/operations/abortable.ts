import { sleep as sdkSleep } from '@wanas/operations';
import { abortedError } from '../errors';

/** Waits `ms`, or rejects with {@link abortedError} as soon as `signal` is aborted (the SDK's sleep). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return sdkSleep(ms, signal).catch((e: unknown) => {
    throw signal.aborted ? abortedError(signal) : e;
  });
}
