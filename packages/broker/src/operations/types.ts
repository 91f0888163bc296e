import type { PodResult } from '@wanas/proto';
import type { Logger } from 'winston';
import type { z } from 'zod';
import type { PodStore } from '../store/pod-store';

/** JSON-like object: what travels as a `google.protobuf.Struct`. */
export type JsonObject = { [key: string]: unknown };

/** What an operation sees when it runs in one pod. */
export interface OperationContext {
  site: string;
  pod: string;
  brokerId: string;
  correlationId: string;
  headers: Record<string, string>;
  /** The pod's store (shared by the pod's brokers). */
  store: PodStore;
  /** The request's idempotency key (required for operations that change state). */
  idempotencyKey: string;
  /** Epoch ms by which the result is needed. */
  deadline: number;
  /**
   * Aborted when the result is no longer wanted: the caller cancelled, a hedge twin answered first, or the
   * deadline passed (reason: the iterator's `DeadlineReached`). Long operations should stop (see
   * `operations/abortable.ts`).
   */
  signal: AbortSignal;
  logger: Logger;
}

/** Where a request is going, for operations that shape it per level. */
export interface ShapeTarget {
  site: string;
  /** Set for a pod-level request; undefined for a site-level one. */
  pod?: string;
}

/**
 * A plug-in operation. `params` validates what the client sent (zod); `execute` runs in one pod;
 * `reduce` turns every successful pod result into one federation-wide result; `shape` may rewrite the
 * params sent to a site or a pod (the site and pod forms of a request may differ from the Aggregate's).
 */
export interface Operation<P extends JsonObject = JsonObject> {
  name: string;
  /** One line for `wanas ops` and docs. */
  description: string;
  /** False for operations that change state: they need an idempotency key and run once per key per pod. */
  idempotent: boolean;
  params: z.ZodType<P>;
  execute(params: P, ctx: OperationContext): JsonObject | Promise<JsonObject>;
  reduce?(results: PodResult[]): JsonObject;
  shape?(params: P, target: ShapeTarget): P;
  /**
   * For MODE_FIRST: the gRPC codes of this operation's own answers that mean "not in this pod, try the
   * next one" (e.g. RESOURCE_EXHAUSTED for a full pool). A state-changing operation moves on only on these
   * (and when a pod was surely never reached); an idempotent one moves on after any failure.
   */
  nextPodOn?: readonly number[];
}
