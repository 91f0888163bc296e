/**
 * A listing's answer at the entry: the merged page as `reduced` (its items with their site and pod), each
 * pod's result as how many of its items the page holds (the items are not sent twice), and the token of
 * the next page. A page needs every pod it asked: one that failed could hold the next items, so the call
 * fails (the pods' code, else UNAVAILABLE) with the partial answer as a detail, and the same token may be
 * sent again.
 */
import type { AggregateResponse, PodResult } from '@wanas/proto';
import { key, type Paging } from '../model';
import { podsFailure } from '../modes/required-sites';
import { mergePage } from './merge';
import { encodePageToken } from './token';

/** The fields of a paged AggregateResponse. */
export type PagedFields = Pick<AggregateResponse, 'pods' | 'reduced' | 'nextPageToken' | 'truncated'>;

/** The page of a listing whose pods all answered; throws the failure when one did not. */
export function pagedAnswer(
  paging: Paging,
  results: PodResult[],
  partial: (fields: PagedFields) => AggregateResponse,
): PagedFields {
  const failedPods = results.filter((r) => r.code !== 0);
  if (failedPods.length > 0) {
    const fields = {
      pods: results.map(slim(new Map())),
      reduced: undefined,
      nextPageToken: '',
      truncated: false,
    };
    throw podsFailure(
      partial(fields),
      failedPods,
      'a listing needs every pod that still has items (send the same page_token again)',
    );
  }
  const page = mergePage(paging.spec, results, paging.pageSize, paging.maxBytes);
  const scope = paging.binding.pods;
  const done = new Set(paging.cursor.done);
  for (const p of page.exhausted) done.add(scope.indexOf(p));
  // Short, though not for bytes: one pod's items ran ahead of the others' and bounded it. Ask more of each.
  const short = page.items.length < paging.pageSize && !page.cutByBytes;
  const fanout = short ? Math.min(paging.cursor.fanout * 2, scope.length) : paging.cursor.fanout;
  const cursor = {
    after: page.after,
    afterPod: page.afterPod,
    done: [...done].sort((a, b) => a - b),
    fanout,
  };
  const next = page.more ? encodePageToken(paging.binding, cursor) : '';
  return {
    pods: results.map(slim(page.listed)),
    reduced: { [paging.spec.items]: page.items, count: page.items.length },
    nextPageToken: next,
    // Cut to fit one message: said when the caller did not page (a paged caller follows the token anyway).
    truncated: page.more && (paging.pageSize === 0 || page.cutByBytes),
  };
}

/** A pod's result without its items: how many of them the page holds. */
const slim =
  (listed: Map<string, number>) =>
  (r: PodResult): PodResult =>
    r.code === 0 ? { ...r, result: { listed: listed.get(key(r)) ?? 0 } } : r;
