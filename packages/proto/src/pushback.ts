import { status, type Metadata } from '@grpc/grpc-js';

/**
 * The trailer a load refusal carries its retry pushback in (gRPC A6): a client waits this long, ms,
 * before trying again. Brokers send it; clients, the dev federation and the bench read it.
 */
export const PUSHBACK_HEADER = 'grpc-retry-pushback-ms';

/**
 * A load refusal's retry pushback, ms: the error is RESOURCE_EXHAUSTED with a valid
 * {@link PUSHBACK_HEADER} trailer. Undefined for any other error (not a refusal to wait out).
 */
export function pushbackMsOf(e: unknown): number | undefined {
  const err = e as { code?: number; metadata?: Metadata } | undefined;
  if (err?.code !== status.RESOURCE_EXHAUSTED) return undefined;
  const v = err.metadata?.get(PUSHBACK_HEADER)[0];
  const ms = v === undefined ? NaN : Number(v);
  return Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}
