/**
 * The exactly-once ledger, its vocabulary: what a pod remembers of an idempotency key (the first outcome,
 * a result or a {@link Refusal}, kept as JSON text), what a resend hears ({@link OnceOutcome}), and the
 * two steps of an asynchronous write ({@link Ledger}: claim, then settle). One set of types for both
 * adapters (`ledger-sqlite.ts`, `ledger-postgres.ts`); `run-once.ts` runs a write through them.
 *
 * Words: to **claim** a key is to take it for one broker until a lease ends; to **settle** a claim is to
 * record its outcome (or, when the outcome is not known, to drop the claim); to **replay** is to answer a
 * resend with the remembered outcome.
 */
import { status } from '@grpc/grpc-js';
import { stableJson } from '@wanas/topology';
import { createHash } from 'node:crypto';
import { BrokerError } from '../errors';

/** How long a remembered idempotency key lasts by default: 24 h. */
export const DEFAULT_IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000;
/** How long settling a claim may take, ms (it runs after its request has been answered). */
export const SETTLE_TIMEOUT_MS = 5000;

/**
 * An action's definitive "no" that changed nothing (a full pool, a missing pool, a backend's refusal):
 * remembered with the key like a result, and replayed to a resend.
 */
export class Refusal extends Error {
  constructor(
    /** gRPC status code of the answer, e.g. RESOURCE_EXHAUSTED. */
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = 'Refusal';
  }
}

/** The remembered first outcome of a state-changing request. */
export interface RememberedResult {
  operation: string;
  paramsHash: string;
  result: Record<string, unknown>;
}

/** What a keyed write did: acted (or replayed an action), refused (or replayed a refusal), or found the key used with other params. */
export type OnceOutcome =
  | { result: Record<string, unknown>; replayed: boolean }
  | { refused: Refusal; replayed: boolean }
  | { conflict: RememberedResult };

/** What a claim found: a remembered outcome, a conflict, a claim made, or one another broker holds. */
export type ClaimOutcome =
  OnceOutcome | { claimed: true } | { pending: { owner: string; leaseUntil: number } };

/** A settled outcome to remember, or `undefined` when it is not known (the claim is dropped). */
export type Settlement = Record<string, unknown> | Refusal | undefined;

/** The two steps of an asynchronous exactly-once write, on a pod's store. */
export interface Ledger {
  /**
   * The remembered outcome of the key (`replay`, or `conflict` for other params), else a claim on it for
   * `owner` until `leaseUntil` (epoch ms). A claim another broker holds whose lease has not ended is
   * `pending`; an ended lease (its broker died or gave up mid-call) is taken over.
   */
  claim(
    key: string,
    operation: string,
    params: unknown,
    owner: string,
    leaseUntil: number,
  ): Promise<ClaimOutcome>;
  /** Ends a claim: remembers the outcome with the key, or with `undefined` forgets the claim. */
  settle(key: string, operation: string, params: unknown, outcome: Settlement): Promise<void>;
}

/** FAILED_PRECONDITION for an idempotency key first used with other params (by `operation`). */
export function keyConflict(operation: string): BrokerError {
  return new BrokerError(
    status.FAILED_PRECONDITION,
    `idempotency_key was already used with different params (${operation}); use a new key`,
  );
}

/** Where a remembered {@link Refusal} is kept in the ledger's result column. */
const REFUSAL_FIELD = '$refused';

/** What the ledger keeps for an outcome (JSON text; a refusal under {@link REFUSAL_FIELD}), on every store. */
export function storedOutcome(outcome: Record<string, unknown> | Refusal): string {
  return JSON.stringify(
    outcome instanceof Refusal
      ? { [REFUSAL_FIELD]: { code: outcome.code, message: outcome.message } }
      : outcome,
  );
}

/** A key's ledger row as a resend hears it: the first outcome replayed, or a conflict for other params. */
export function replayOf(
  row: { operation: string; paramsHash: string; result: string },
  paramsHash: string,
): OnceOutcome {
  const result = JSON.parse(row.result) as Record<string, unknown>;
  if (row.paramsHash !== paramsHash)
    return { conflict: { operation: row.operation, paramsHash: row.paramsHash, result } };
  const refused = result[REFUSAL_FIELD] as { code: number; message: string } | undefined;
  if (refused) return { refused: new Refusal(refused.code, refused.message), replayed: true };
  return { result, replayed: true };
}

/** The hash an idempotency key's params are remembered by (key order does not matter). */
export function paramsHashOf(operation: string, params: unknown): string {
  return createHash('sha256')
    .update(`${operation}\0${stableJson(params)}`)
    .digest('hex');
}
