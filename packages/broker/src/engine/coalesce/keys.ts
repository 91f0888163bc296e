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

/** Fields that route or time a request, at every hop: never part of a key. */
const ROUTING = ['correlationId', 'idempotencyKey', 'hedge', 'attemptTimeout'] as const;
/** And those a federation request adds: its budget, its sender, its target list, its hop count. */
const FEDERATION_ROUTING = [...ROUTING, 'deadline', 'target', 'sourceSite', 'sourceBroker', 'hops'] as const;

/** `req` as JSON with sorted keys, without the fields named. */
function keyOf(req: object, without: readonly string[], ...more: unknown[]): string {
  const asked = Object.fromEntries(Object.entries(req).filter(([k]) => !without.includes(k)));
  return stableJson([...more, asked]);
}

/**
 * An Aggregate's key for the results cache (the client's identity and the topology's generation in it),
 * and for coalescing when prefixed by how it is answered (streamed or not).
 */
export function aggregateKey(req: AggregateRequest, client: string, generation: number): string {
  return keyOf(req, [...ROUTING, 'timeout', 'maxStaleness'], generation, client);
}

/**
 * A SiteRequest's or LocalRequest's key at the broker serving it (the client is a field of the request);
 * undefined when it names no client (an older sender), which is never shared.
 */
export function federationKey(req: SiteRequest | LocalRequest): string | undefined {
  return req.client ? keyOf(req, FEDERATION_ROUTING) : undefined;
}
