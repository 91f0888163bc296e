/**
 * An operation's results cache policy: `cache: { maxAge: '2s' }` says a whole federation-wide answer may be
 * served again, to a client that accepts it (`AggregateRequest.max_staleness`), for at most this long.
 */

/** The cache policy an operation declares. `maxAge`: ms as a number, or a duration such as `500ms`, `2s`, `1m`. */
export interface CachePolicy {
  maxAge: number | string;
}

/** Longest age any answer may be cached for, ms (an hour: a cache, not a store). */
export const MAX_CACHE_AGE_MS = 3_600_000;

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000 } as const;

/** A duration (`250ms`, `2s`, `1.5m`, or ms as a number) in ms; undefined when it is not one. */
export function durationMs(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = DURATION.exec(v.trim());
  return m ? Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS] : undefined;
}

/** What is wrong with a cache policy, naming the field; undefined when it is one. */
export function cachePolicyProblem(v: unknown): string | undefined {
  if (!v || typeof v !== 'object') return 'cache: must be { maxAge: <duration> }, e.g. { maxAge: "2s" }';
  const ms = durationMs((v as { maxAge?: unknown }).maxAge);
  if (ms === undefined || ms <= 0)
    return `cache.maxAge: must be a duration such as "500ms", "2s" or "1m" (got ${JSON.stringify((v as { maxAge?: unknown }).maxAge)})`;
  if (ms > MAX_CACHE_AGE_MS) return `cache.maxAge: must be at most 1 hour (got ${ms} ms)`;
  return undefined;
}
