import { status } from '@grpc/grpc-js';

/**
 * Codes that say something about the peer (it is down, too slow or broken), as opposed to the caller's
 * own mistakes. Breakers count these as failures; caller errors count as successes. RESOURCE_EXHAUSTED is
 * not one: a peer that refuses work for load is busy, not broken (it answered at once), and counting it
 * opened breakers and sent the refused work to its twins, more load where there was too much.
 */
const PEER_FAILURE_CODES: ReadonlySet<number> = new Set([
  status.UNAVAILABLE,
  status.DEADLINE_EXCEEDED,
  status.INTERNAL,
  status.UNKNOWN,
]);

/** Codes on which a connection iterator moves to the next equivalent endpoint. */
const FAILOVER_CODES: ReadonlySet<number> = new Set([
  status.UNAVAILABLE,
  status.RESOURCE_EXHAUSTED,
  status.DEADLINE_EXCEEDED,
]);

/** True when `code` means the peer failed (counts against its breaker). */
export function isPeerFailure(code: number): boolean {
  return PEER_FAILURE_CODES.has(code);
}

/** True when a request that failed with `code` may be sent to an equivalent endpoint instead. */
export function isFailoverCode(code: number): boolean {
  return FAILOVER_CODES.has(code);
}

/** The gRPC status name of a code number, e.g. 14 → "UNAVAILABLE". */
export function codeName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}
