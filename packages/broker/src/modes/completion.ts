import { status } from '@grpc/grpc-js';
import type { PodResult } from '@wanas/proto';
import { key, type PodRef } from '../fan-out';

/** The pods of a fan-out so far: counted by {@link collect} as each pod's result becomes final. */
export interface Tally {
  /** Pods asked. */
  total: number;
  ok: number;
  failed: number;
  /** Pods of required sites still without a final result. */
  requiredLeft: number;
  /** The first pod of a required site that failed, if any. */
  requiredFailed: PodResult | undefined;
}

/** Why a fan-out answers before every pod has: the status given to the pods still running (cancelled). */
export interface EarlyAnswer {
  code: number;
  message: string;
}

/**
 * When a MODE_ALL fan-out may answer before every pod has. `required` says which pods count as required;
 * `check` looks at the tally after each final result.
 */
export interface CompletionRule {
  required(pod: PodRef): boolean;
  check(tally: Tally): EarlyAnswer | undefined;
}

/**
 * The rule for `min_ok` and `required_sites` (undefined when neither is set: wait for every pod). A failed
 * required pod decides the call at once (it fails). With `min_ok`, the call answers once that many pods are
 * OK and every required pod is final, or as soon as too many have failed for `min_ok` to be reached.
 */
export function completionRule(
  minOk: number,
  requiredSites: ReadonlySet<string>,
): CompletionRule | undefined {
  if (minOk === 0 && requiredSites.size === 0) return undefined;
  return {
    required: (pod) => requiredSites.has(pod.site),
    check: (t) => {
      if (t.requiredFailed) {
        return {
          code: status.CANCELLED,
          message: `not waited for: ${key(t.requiredFailed)} of a required site failed`,
        };
      }
      if (minOk === 0) return undefined;
      if (t.ok >= minOk && t.requiredLeft === 0) {
        return { code: status.CANCELLED, message: `not needed: min_ok ${minOk} reached` };
      }
      if (t.failed > t.total - minOk) {
        return {
          code: status.CANCELLED,
          message: `not waited for: min_ok ${minOk} can no longer be reached (${t.failed} of ${t.total} pods failed)`,
        };
      }
      return undefined;
    },
  };
}
