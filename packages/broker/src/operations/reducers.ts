/**
 * The declared reducers of configured operations (`reduce:` in the topology): sum, min, max, count,
 * concat and mergeSorted over a dotted field of every OK pod's result. The reduction is named after the
 * field's last segment (`{ total: "…" }` for `sum: stats.total`), or `count`.
 */
import type { ReduceDoc } from '@wanas/topology';
import type { JsonObject, PodOutcome } from './types';

/** A reducer made from its declaration. */
export type Reducer = (results: PodOutcome[]) => JsonObject;

/** The value at a dotted path of a result; undefined when any step is missing. */
export function fieldAt(obj: unknown, path: string): unknown {
  let v: unknown = obj;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as JsonObject)[k];
  }
  return v;
}

/** The name a reduction is kept under: the path's last segment. */
function leaf(path: string): string {
  return path.slice(path.lastIndexOf('.') + 1);
}

/** The values of a field across the OK pods that have it. */
function valuesOf(results: PodOutcome[], path: string): unknown[] {
  const out: unknown[] = [];
  for (const r of results) {
    if (r.code !== 0 || !r.result) continue;
    const v = fieldAt(r.result, path);
    if (v !== undefined && v !== null) out.push(v);
  }
  return out;
}

/** A number, or an integer in a string (proto3 JSON's int64), as something {@link compare} orders. */
type Numeric = { n: number } | { big: bigint };

function numeric(v: unknown): Numeric | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return { n: v };
  if (typeof v === 'string' && /^-?[0-9]+$/.test(v)) return { big: BigInt(v) };
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return { n: Number(v) };
  return undefined;
}

/** Orders two values: numbers (int64 strings exactly), else strings; numbers before strings. */
export function compare(a: unknown, b: unknown): number {
  const x = numeric(a);
  const y = numeric(b);
  if (x && y) {
    if ('big' in x && 'big' in y) return x.big < y.big ? -1 : x.big > y.big ? 1 : 0;
    const xn = 'big' in x ? Number(x.big) : x.n;
    const yn = 'big' in y ? Number(y.big) : y.n;
    return xn - yn;
  }
  if (x) return -1;
  if (y) return 1;
  return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
}

/**
 * The exact sum: integers (numbers or int64 strings) add as BigInt; a result is a string when any input
 * was one (so it stays exact), else a number. A fraction anywhere makes it a plain number sum.
 */
function sum(values: unknown[]): number | string {
  let big = 0n;
  let float = 0;
  let anyString = false;
  let anyFraction = false;
  for (const v of values) {
    const x = numeric(v);
    if (!x) continue;
    if ('big' in x) {
      anyString = true;
      big += x.big;
      float += Number(x.big);
    } else if (Number.isInteger(x.n)) {
      big += BigInt(x.n);
      float += x.n;
    } else {
      anyFraction = true;
      float += x.n;
    }
  }
  if (anyFraction) return float;
  if (anyString || big > BigInt(Number.MAX_SAFE_INTEGER) || big < BigInt(Number.MIN_SAFE_INTEGER))
    return big.toString();
  return Number(big);
}

function extreme(values: unknown[], sign: 1 | -1): unknown {
  let best: unknown = undefined;
  for (const v of values) {
    if (!numeric(v) && typeof v !== 'string') continue;
    if (best === undefined || sign * compare(v, best) > 0) best = v;
  }
  return best ?? null;
}

/** The arrays of a field across OK pods, in pod order. */
function arraysOf(results: PodOutcome[], path: string): unknown[][] {
  return valuesOf(results, path).filter((v): v is unknown[] => Array.isArray(v));
}

/** Builds the reducer a declaration names. */
export function reducerOf(doc: ReduceDoc): Reducer {
  if (doc.sum !== undefined) {
    const path = doc.sum;
    return (rs) => ({ [leaf(path)]: sum(valuesOf(rs, path)) });
  }
  if (doc.min !== undefined) {
    const path = doc.min;
    return (rs) => ({ [leaf(path)]: extreme(valuesOf(rs, path), -1) });
  }
  if (doc.max !== undefined) {
    const path = doc.max;
    return (rs) => ({ [leaf(path)]: extreme(valuesOf(rs, path), 1) });
  }
  if (doc.count) return (rs) => ({ count: rs.filter((r) => r.code === 0).length });
  if (doc.concat !== undefined) {
    const { field, limit } =
      typeof doc.concat === 'string' ? { field: doc.concat, limit: undefined } : doc.concat;
    return (rs) => {
      const all = arraysOf(rs, field).flat();
      return { [leaf(field)]: limit === undefined ? all : all.slice(0, limit) };
    };
  }
  const m = doc.mergeSorted!;
  const sign = m.order === 'desc' ? -1 : 1;
  return (rs) => {
    // A stable sort of the pods' lists, in pod order: equal keys keep the topology's order.
    const all = arraysOf(rs, m.field).flat();
    all.sort((a, b) => sign * compare(fieldAt(a, m.by), fieldAt(b, m.by)));
    return { [leaf(m.field)]: m.limit === undefined ? all : all.slice(0, m.limit) };
  };
}
