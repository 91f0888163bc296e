/**
 * What makes two requests identical, at each hop: everything that can change the answer — the operation,
 * its params, the scope, the mode, the page, the forwarded headers and the client's identity — and nothing
 * that only routes or times it (correlation id, deadlines, the sender, target lists, hedging). Keys are made
 * for reads only, so an idempotency key (which a read does not use; the CLI sends a new one every time) is
 * not part of them.
 * JSON with sorted keys, so a different key order in the params is the same request.
 */
import { stableJson } from '@wanas/topology';
import type { AggregateRequest, LocalRequest, SiteRequest } from '@wanas/proto';

/**
 * An Aggregate's key for the results cache (the client's identity and the topology's generation in it),
 * and for coalescing when prefixed by how it is answered (streamed or not).
 */
export function aggregateKey(req: AggregateRequest, client: string, generation: number): string {
  const {
    correlationId: _id,
    timeout: _t,
    attemptTimeout: _a,
    maxStaleness: _s,
    hedge: _h,
    idempotencyKey: _k,
    ...asked
  } = req;
  return stableJson([generation, client, asked]);
}

/** A SiteRequest's key at its representative; undefined when it names no client (an older entry). */
export function siteKey(req: SiteRequest): string | undefined {
  if (!req.client) return undefined;
  const {
    correlationId: _id,
    deadline: _d,
    attemptTimeout: _a,
    target: _t,
    sourceSite: _ss,
    sourceBroker: _sb,
    hedge: _h,
    hops: _hops,
    idempotencyKey: _k,
    ...asked
  } = req;
  return stableJson(asked);
}

/** A LocalRequest's key at its pod; undefined when it names no client (an older sender). */
export function localKey(req: LocalRequest): string | undefined {
  if (!req.client) return undefined;
  const {
    correlationId: _id,
    deadline: _d,
    target: _t,
    sourceSite: _ss,
    sourceBroker: _sb,
    hops: _hops,
    idempotencyKey: _k,
    ...asked
  } = req;
  return stableJson(asked);
}
