import type { z } from 'zod';
import { cachePolicyProblem, type CachePolicy } from './cache';

/** JSON-like object: what travels as a `google.protobuf.Struct` (params, a pod's result, a reduction). */
export type JsonObject = { [key: string]: unknown };

/** The lines an operation logs go to its broker's log, with the request's correlation id added. */
export interface OperationLogger {
  debug(message: string, meta?: JsonObject): unknown;
  info(message: string, meta?: JsonObject): unknown;
  warn(message: string, meta?: JsonObject): unknown;
  error(message: string, meta?: JsonObject): unknown;
}

/** What an operation sees when it runs in one pod. */
export interface OperationContext {
  site: string;
  pod: string;
  /** The broker running it. */
  brokerId: string;
  correlationId: string;
  /** The request's forwarded headers. */
  headers: Record<string, string>;
  /** The request's idempotency key ('' for a read sent without one). */
  idempotencyKey: string;
  /** Epoch ms by which the result is needed (the pod attempt's deadline). */
  deadline: number;
  /**
   * Aborted when the result is no longer wanted: the caller cancelled, a hedge twin answered first, a
   * quorum was reached, or the deadline passed. Pass it on to whatever the operation waits for.
   */
  signal: AbortSignal;
  /** The W3C `traceparent` of the operation's span, when the request is traced (send it on). */
  traceparent: string | undefined;
  logger: OperationLogger;
  /**
   * Runs `action` at most once per idempotency key in this pod, across the pod's brokers (its ledger is
   * the pod's shared store): a resend, or a failover to a twin broker, gets the first outcome back without
   * running `action` again. An {@link OperationError} it throws is remembered like a result, except
   * UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, UNKNOWN and INTERNAL (the outcome is not known: a resend
   * runs it again, with the same key). A state-changing operation wraps its change in it.
   */
  once(action: () => Promise<JsonObject>): Promise<JsonObject>;
  /**
   * Set for a pageable operation (one with `page`): return the items whose order key is `after` or later
   * (byte order; "" = from the start), in that order, at most `limit` of them (0: no limit). The broker
   * drops what was listed already, and cuts the rest to the page and the message limit.
   */
  page?: PageRequest | undefined;
}

/** The part of a listing a pageable operation's pod is asked for (see {@link OperationContext.page}). */
export interface PageRequest {
  after: string;
  limit: number;
}

/**
 * How a pageable operation's result lists its items in one federation-wide order: `items` names the result
 * field holding them (a list of objects), `key` the item field that orders them (a string, unique within a
 * pod; ties across pods are ordered by pod). The entry broker merges the pods' lists in that order.
 */
export interface PageSpec {
  items: string;
  key: string;
}

/** Where a request is going, for operations that shape it per level. */
export interface ShapeTarget {
  site: string;
  /** Set for a pod-level request; undefined for a site-level one. */
  pod?: string;
}

/** One pod's answer, as a reducer sees it. */
export interface PodOutcome {
  site: string;
  pod: string;
  /** 0 (OK) or the gRPC status code of the pod's failure. */
  code: number;
  message: string;
  /** The pod's result (set when `code` is 0). */
  result?: JsonObject | undefined;
}

/**
 * An operation. `params` validates what the client sent (zod); `execute` runs in one pod; `reduce` turns
 * every pod's outcome into one federation-wide result; `shape` may rewrite the params sent to a site or a
 * pod.
 */
export interface Operation<P extends JsonObject = JsonObject, C extends OperationContext = OperationContext> {
  name: string;
  /** One line for `wanas ops` and docs. */
  description: string;
  /** False for operations that change state: they need an idempotency key and run once per key per pod. */
  idempotent: boolean;
  params: z.ZodType<P>;
  execute(params: P, ctx: C): JsonObject | Promise<JsonObject>;
  reduce?(results: PodOutcome[]): JsonObject;
  shape?(params: P, target: ShapeTarget): P;
  /**
   * For MODE_FIRST: the gRPC codes of this operation's own answers that mean "not in this pod, try the
   * next one" (e.g. RESOURCE_EXHAUSTED for a full pool). A state-changing operation moves on only on these
   * (and when a pod was surely never reached); an idempotent one moves on after any failure.
   */
  nextPodOn?: readonly number[];
  /**
   * A pageable operation (a listing): `AggregateRequest.page_size` and `page_token` page through its items
   * in federation-wide order, and an answer too large for one message is cut at an item, never refused.
   * Its `reduce` is not used: the merged page is the reduction.
   */
  page?: PageSpec;
  /**
   * May a whole answer (every pod OK) be served again from the entry's results cache, and for how long at
   * most? Only to a client that accepts it (`max_staleness`); an idempotent operation only.
   */
  cache?: CachePolicy;
  /** How `wanas ops` and `ListOperations` describe it (default: `module`). */
  info?: OperationInfo;
}

/** What `AdminService.ListOperations` says of an operation beyond its name. */
export interface OperationInfo {
  /** `builtin`, `grpc`, `http` or `module`. */
  kind: 'builtin' | 'grpc' | 'http' | 'module';
  /** The topology's service it calls (configured operations). */
  service?: string;
  /** The backend method (`pkg.Service/Method` or `VERB /path`). */
  method?: string;
  /** The reducer as configured, e.g. `{ sum: 'total' }`. */
  reduce?: JsonObject;
  /** The JSON Schema of the params (default: derived from `params`). */
  paramsSchema?: () => JsonObject | undefined;
  /** The module file it came from. */
  module?: string;
}

/**
 * Defines an operation (checks its fields once, keeps the types of its params): what a plug-in module
 * exports, alone, in an array, or as its default export.
 */
export function defineOperation<P extends JsonObject, C extends OperationContext = OperationContext>(
  op: Operation<P, C>,
): Operation<P, C> {
  const problem = operationProblem(op);
  if (problem) throw new TypeError(`defineOperation: ${problem}`);
  return op;
}

const isName = (v: unknown): boolean => typeof v === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(v);

/** Operation names: dotted lower-case words, e.g. `inventory.count`. */
export const OPERATION_NAME = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/;

/** What is wrong with a value meant as an operation, naming the field; undefined when it is one. */
export function operationProblem(v: unknown): string | undefined {
  if (!v || typeof v !== 'object') return 'an operation must be an object';
  const op = v as Partial<Operation>;
  if (typeof op.name !== 'string' || !OPERATION_NAME.test(op.name))
    return `name: must be dotted lower-case words such as "inventory.count" (got ${JSON.stringify(op.name)})`;
  if (typeof op.description !== 'string') return `${op.name}: description: must be a string`;
  if (typeof op.idempotent !== 'boolean') return `${op.name}: idempotent: must be true or false`;
  if (!op.params || typeof (op.params as { safeParse?: unknown }).safeParse !== 'function')
    return `${op.name}: params: must be a zod schema (import { z } from '@wanas/operations')`;
  if (typeof op.execute !== 'function') return `${op.name}: execute: must be a function`;
  if (op.reduce !== undefined && typeof op.reduce !== 'function')
    return `${op.name}: reduce: must be a function`;
  if (op.page !== undefined && !(isName(op.page.items) && isName(op.page.key)))
    return `${op.name}: page: must be { items: '<result field>', key: '<item field>' }`;
  if (op.nextPodOn !== undefined && !(Array.isArray(op.nextPodOn) && op.nextPodOn.every(Number.isInteger)))
    return `${op.name}: nextPodOn: must be a list of gRPC code numbers (use Code.RESOURCE_EXHAUSTED)`;
  if (op.cache !== undefined) {
    const problem = cachePolicyProblem(op.cache);
    if (problem) return `${op.name}: ${problem}`;
    if (!op.idempotent)
      return `${op.name}: cache: a state-changing operation (idempotent: false) is never cached`;
  }
  return undefined;
}
