/**
 * A write run at most once per idempotency key in a pod, over the {@link Ledger} of the pod's store:
 * claim, act, settle; a remembered outcome is replayed.
 */
import { status } from '@grpc/grpc-js';
import type { JsonObject } from '@wanas/operations';
import { BrokerError, abortedError, toBrokerError } from '../errors';
import { Refusal, keyConflict, type Ledger, type Settlement } from './ledger';

/** How often a resend polls while a twin broker's call with the same key is in flight, ms. */
const PENDING_POLL_MS = 25;

/**
 * Codes after which the outcome of a write is not known (the backend may or may not have acted): the
 * claim is dropped, not remembered, so a resend runs the write again with the same idempotency key.
 * Every other code is the backend's definitive answer, remembered and replayed like a result.
 */
const UNKNOWN_OUTCOME_CODES: ReadonlySet<number> = new Set([
  status.UNAVAILABLE,
  status.DEADLINE_EXCEEDED,
  status.CANCELLED,
  status.UNKNOWN,
  status.INTERNAL,
]);

/** Who runs a write and for how long: the broker, its pod's store and the request. */
export interface OnceRequest {
  store: Ledger;
  brokerId: string;
  operation: string;
  params: JsonObject;
  idempotencyKey: string;
  /** The claim's lease ends here (the pod attempt's deadline, epoch ms). */
  deadline: number;
  signal: AbortSignal;
}

/**
 * Runs `action` at most once per idempotency key in the pod (the context's `once`): a remembered outcome
 * is replayed; a claim another broker holds is waited on (until it is settled, its lease ends, or this
 * request's deadline: ABORTED); a claim of our own runs `action` and settles it with the outcome.
 */
export async function runOnce(r: OnceRequest, action: () => Promise<JsonObject>): Promise<JsonObject> {
  if (!r.idempotencyKey) return action();
  for (;;) {
    if (r.signal.aborted) throw abortedError(r.signal);
    const claim = await r.store.claim(r.idempotencyKey, r.operation, r.params, r.brokerId, r.deadline);
    if ('result' in claim) return claim.replayed ? { ...claim.result } : claim.result;
    if ('refused' in claim) throw new BrokerError(claim.refused.code, claim.refused.message);
    if ('conflict' in claim) throw keyConflict(claim.conflict.operation);
    if ('pending' in claim) {
      if (Date.now() + PENDING_POLL_MS >= r.deadline) {
        throw new BrokerError(
          status.ABORTED,
          `a write with this idempotency key is in flight on broker ${claim.pending.owner}; its outcome is not known yet (send it again later)`,
        );
      }
      await new Promise((res) => setTimeout(res, PENDING_POLL_MS));
      continue;
    }
    return settleWith(r, action);
  }
}

/** Runs the claimed action and records its outcome (or drops the claim when the outcome is not known). */
async function settleWith(r: OnceRequest, action: () => Promise<JsonObject>): Promise<JsonObject> {
  const settle = (outcome: Settlement) => r.store.settle(r.idempotencyKey, r.operation, r.params, outcome);
  let result: JsonObject;
  try {
    result = await action();
  } catch (e) {
    const err = toBrokerError(e);
    await settle(UNKNOWN_OUTCOME_CODES.has(err.code) ? undefined : new Refusal(err.code, err.details));
    throw err;
  }
  await settle(result);
  return result;
}
