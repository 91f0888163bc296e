import { Mode, type AggregateRequest } from '@wanas/proto';
import { invalidArgument } from '../../errors';
import type { PodRef, RequestMode } from '../model';
import { MAX_SCOPE_ENTRIES } from '../../request-limits';

/**
 * Reads and checks the mode fields of an Aggregate against the topology's sites and the pods in scope;
 * INVALID_ARGUMENT naming the field for an unknown or out-of-scope site, a repeated one, `min_ok` larger
 * than the pods in scope, or a field used with the mode it does not apply to.
 */
export function parseMode(
  req: Pick<AggregateRequest, 'mode' | 'preferSites' | 'minOk' | 'requiredSites'>,
  topologySites: readonly string[],
  scoped: readonly PodRef[],
): RequestMode {
  const inScope = new Set(scoped.map((p) => p.site));
  const checkSites = (field: string, sites: readonly string[]) => {
    if (sites.length > MAX_SCOPE_ENTRIES) throw invalidArgument(field, `at most ${MAX_SCOPE_ENTRIES} sites`);
    sites.forEach((s, i) => {
      if (!topologySites.includes(s))
        throw invalidArgument(`${field}[${i}]`, `unknown site "${s}" (known: ${topologySites.join(', ')})`);
      if (!inScope.has(s))
        throw invalidArgument(`${field}[${i}]`, `site "${s}" is not in the request's scope`);
      if (sites.indexOf(s) !== i) throw invalidArgument(`${field}[${i}]`, `site "${s}" is listed twice`);
    });
  };
  switch (req.mode) {
    case Mode.MODE_UNSPECIFIED:
    case Mode.MODE_ALL:
      if (req.preferSites.length)
        throw invalidArgument(
          'prefer_sites',
          'applies to MODE_FIRST only (MODE_ALL asks every site at once)',
        );
      checkSites('required_sites', req.requiredSites);
      if (req.minOk > scoped.length) {
        throw invalidArgument(
          'min_ok',
          `${req.minOk} is more than the ${scoped.length} pod(s) in scope; it could never be reached`,
        );
      }
      return { kind: 'all', minOk: req.minOk, requiredSites: new Set(req.requiredSites) };
    case Mode.MODE_FIRST:
      if (req.minOk)
        throw invalidArgument('min_ok', 'applies to MODE_ALL only (MODE_FIRST stops at the first OK pod)');
      if (req.requiredSites.length) {
        throw invalidArgument(
          'required_sites',
          'applies to MODE_ALL only; to limit where MODE_FIRST may place, use scope.sites',
        );
      }
      checkSites('prefer_sites', req.preferSites);
      return { kind: 'first', preferSites: req.preferSites };
    default:
      throw invalidArgument(
        'mode',
        `unknown value ${String(req.mode)}; use MODE_ALL, MODE_FIRST or leave it unset`,
      );
  }
}
