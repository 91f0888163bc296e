/**
 * Encoded sizes without encoding. A served answer is measured against the message limit before it is sent;
 * measuring it by encoding it meant encoding every answer twice, and a listing's items once more each. On a
 * pod of 2,500 sessions that held the event loop ~400 ms, long enough on a loaded machine for a peer's
 * keepalive to give up on the connection. These walk the JSON once and allocate nothing; they are exact for
 * what ts-proto's `Struct.wrap`/`encode` write (tested against it).
 */
import {
  AggregateResponse,
  LocalResponse,
  PodResult,
  SiteResponse,
  type AggregateResponse as Aggregate,
} from '@wanas/proto';
import type { JsonObject } from '../../operations/types';

/** Bytes of a varint holding `n` (n < 2^32). */
function varintBytes(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
}

/** Bytes of a length-delimited field (tag under 16) holding `n` bytes. */
export function delimitedBytes(n: number): number {
  return 1 + varintBytes(n) + n;
}

/** The encoded size of `v` as a `google.protobuf.Value` message's content. */
export function valueBytes(v: unknown): number {
  if (v === null) return 2; // null_value = 0: tag + varint
  switch (typeof v) {
    case 'boolean':
      return 2;
    case 'number':
      return 9; // double: tag + 8
    case 'string':
      return delimitedBytes(Buffer.byteLength(v));
    case 'undefined':
      return 0;
    case 'object':
      return delimitedBytes(Array.isArray(v) ? listBytes(v) : structBytes(v as JsonObject));
    default:
      throw new Error(`Unsupported any value type: ${typeof v}`);
  }
}

/** The encoded size of `items` as a `google.protobuf.ListValue`'s content. */
function listBytes(items: readonly unknown[]): number {
  let n = 0;
  for (const item of items) n += delimitedBytes(valueBytes(item));
  return n;
}

/** The encoded size of `o` as a `google.protobuf.Struct`'s content. */
export function structBytes(o: JsonObject): number {
  let n = 0;
  for (const key of Object.keys(o)) {
    const v = o[key];
    if (v === undefined) continue;
    const entry = (key === '' ? 0 : delimitedBytes(Buffer.byteLength(key))) + delimitedBytes(valueBytes(v));
    n += delimitedBytes(entry);
  }
  return n;
}

/** The encoded size of a PodResult: its small fields encoded, its result counted. */
export function podResultBytes(p: PodResult): number {
  if (!p.result) return PodResult.encode(p).finish().length;
  return (
    PodResult.encode({ ...p, result: undefined }).finish().length + delimitedBytes(structBytes(p.result))
  );
}

/** Σ of the pods as a repeated PodResult field. */
function podsBytes(pods: readonly PodResult[]): number {
  let n = 0;
  for (const p of pods) n += delimitedBytes(podResultBytes(p));
  return n;
}

/** The encoded size of a LocalResponse. */
export function localResponseBytes(m: LocalResponse): number {
  const rest = LocalResponse.encode({ ...m, pod: undefined }).finish().length;
  return rest + (m.pod ? delimitedBytes(podResultBytes(m.pod)) : 0);
}

/** The encoded size of a SiteResponse. */
export function siteResponseBytes(m: SiteResponse): number {
  return SiteResponse.encode({ ...m, pods: [] }).finish().length + podsBytes(m.pods);
}

/** The encoded size of an AggregateResponse. */
export function aggregateResponseBytes(m: Aggregate): number {
  const rest = AggregateResponse.encode({ ...m, pods: [], reduced: undefined }).finish().length;
  return rest + podsBytes(m.pods) + (m.reduced ? delimitedBytes(structBytes(m.reduced)) : 0);
}
