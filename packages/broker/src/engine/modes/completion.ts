import { status } from '@grpc/grpc-js';
import { key, type CompletionRule } from '../model';

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
