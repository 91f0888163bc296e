import type { JsonObject } from './types';

/** Deepest nesting {@link asJsonObject} walks before it leaves the value to JSON's own round trip. */
const MAX_WALK_DEPTH = 64;

/** True when `v` is already what JSON would make of it: null, booleans, finite numbers, strings, plain arrays and objects. */
function isPlainJson(v: unknown, depth: number): boolean {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return true;
  if (typeof v === 'number') return Number.isFinite(v);
  if (typeof v !== 'object' || depth > MAX_WALK_DEPTH) return false;
  if (Array.isArray(v)) {
    for (const x of v) if (!isPlainJson(x, depth + 1)) return false;
    return true;
  }
  const proto = Object.getPrototypeOf(v) as unknown;
  if (proto !== Object.prototype && proto !== null) return false;
  for (const k in v) if (!isPlainJson((v as JsonObject)[k], depth + 1)) return false;
  return true;
}

/**
 * An operation's result as plain JSON (what a `google.protobuf.Struct` can carry): the value itself when it
 * already is (a walk, no copy), else what a JSON round trip makes of it (dates to strings, undefined and
 * functions dropped, class instances to their fields). Throws what JSON.stringify throws (a cycle, a BigInt).
 */
export function asJsonObject(v: unknown): JsonObject {
  if (v !== null && typeof v === 'object' && !Array.isArray(v) && isPlainJson(v, 0)) return v as JsonObject;
  return JSON.parse(JSON.stringify(v)) as JsonObject;
}
