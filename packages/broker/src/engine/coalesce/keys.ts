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
/** An Aggregate's: those, its budgets and the staleness it accepts. */
const AGGREGATE_ROUTING: ReadonlySet<string> = new Set([...ROUTING, 'timeout', 'maxStaleness']);
/** A federation request's: those, its budget, its sender, its target list, its hop count. */
const FEDERATION_ROUTING: ReadonlySet<string> = new Set([
  ...ROUTING,
  ...['deadline', 'target', 'sourceSite', 'sourceBroker', 'hops'],
]);

/**
 * `[...more, req]` as JSON with sorted keys, the fields named left out of `req` (the same text as
 * `stableJson` of that array, built without copying the request: a key is made for every read served).
 */
function keyOf(req: object, without: ReadonlySet<string>, ...more: unknown[]): string {
  let fields = '';
  for (const k of Object.keys(req).sort()) {
    if (without.has(k)) continue;
    const field = `${JSON.stringify(k)}:${stableJson((req as Record<string, unknown>)[k])}`;
    fields = fields ? `${fields},${field}` : field;
  }
  let head = '';
  for (const m of more) head += `${stableJson(m)},`;
  return `[${head}{${fields}}]`;
}

/**
 * An Aggregate's key for the results cache (the client's identity and the topology's generation in it),
 * and for coalescing when prefixed by how it is answered (streamed or not).
 */
export function aggregateKey(req: AggregateRequest, client: string, generation: number): string {
  return keyOf(req, AGGREGATE_ROUTING, generation, client);
}

/**
 * A SiteRequest's or LocalRequest's key at the broker serving it (the client is a field of the request);
 * undefined when it names no client (an older sender), which is never shared.
 */
export function federationKey(req: SiteRequest | LocalRequest): string | undefined {
  return req.client ? keyOf(req, FEDERATION_ROUTING) : undefined;
}
