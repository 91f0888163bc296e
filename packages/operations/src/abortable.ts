import { stoppedError } from './operation-error';

/**
 * Waits `ms`, or rejects as soon as `signal` is aborted: DEADLINE_EXCEEDED when `deadline` (epoch ms) has
 * passed, CANCELLED otherwise (see {@link stoppedError}).
 */
export function sleep(ms: number, signal: AbortSignal, deadline = Infinity): Promise<void> {
  if (signal.aborted) return Promise.reject(stoppedError(deadline));
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(stoppedError(deadline));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
