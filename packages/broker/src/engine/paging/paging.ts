/**
 * Paging as planning sees it: whether an Aggregate pages (its operation is pageable), the checks of
 * `page_size` and `page_token`, the cursor the token holds, which pods are still to ask, and the window each
 * is asked for. See the README, "Paged listings".
 */
import { Mode, type AggregateRequest, type PageWindow } from '@wanas/proto';
import type { Topology } from '@wanas/topology';
import { invalidArgument } from '../../errors';
import type { JsonObject, Operation } from '../../operations/types';
import { key, type PageBinding, type Paging, type PodRef } from '../model';
import { decodePageToken } from './token';

/** Largest `page_size`. */
export const MAX_PAGE_SIZE = 10_000;
/**
 * The first page asks each of n pods for FIRST_FANOUT × page_size / n items (+1), not page_size: with
 * keys spread over the pods (as session ids are), a page still fills, and the pods read and send about
 * FIRST_FANOUT pages' worth in all instead of n. A page cut short because one pod's items ran ahead of the
 * others' (they bound the page) doubles it for the next, up to every pod asked for the whole page.
 */
export const FIRST_FANOUT = 2;
/** Bytes of a message kept for everything but the items (summary, ids, reduced's other fields). */
const MESSAGE_RESERVE_BYTES = 64 * 1024;
/** Bytes kept per pod for its PodResult's own fields (codes, attempts, latency). */
const POD_RESERVE_BYTES = 2 * 1024;
/** The smallest item budget, whatever the limit and the pods. */
const MIN_ITEM_BYTES = 16 * 1024;

/** Bytes the items of `pods` pods' answers may use in a message of at most `limit` bytes. */
export function itemBudget(limit: number, pods: number): number {
  return Math.max(MIN_ITEM_BYTES, limit - MESSAGE_RESERVE_BYTES - POD_RESERVE_BYTES * pods);
}

/**
 * The paging of an Aggregate: undefined for an operation that does not page (INVALID_ARGUMENT if the
 * request asks it to), else the checked page size and the cursor of its token (INVALID_ARGUMENT naming
 * why a token is refused).
 */
export function planPaging(
  req: AggregateRequest,
  op: Operation,
  params: JsonObject,
  scopePods: PodRef[],
  t: Topology,
): Paging | undefined {
  if (!op.page) {
    if (req.pageSize || req.pageToken)
      throw invalidArgument(
        req.pageSize ? 'page_size' : 'page_token',
        `operation "${op.name}" is not pageable (ListOperations shows which are)`,
      );
    return undefined;
  }
  if (req.pageSize > MAX_PAGE_SIZE) throw invalidArgument('page_size', `at most ${MAX_PAGE_SIZE}`);
  if (req.mode === Mode.MODE_FIRST) throw invalidArgument('mode', `a listing asks every pod: use MODE_ALL`);
  if (req.minOk) throw invalidArgument('min_ok', 'a listing needs every pod that has items: leave it 0');
  const binding: PageBinding = {
    federation: t.federation,
    operation: op.name,
    params,
    scope: { sites: req.scope?.sites ?? [], pods: req.scope?.pods ?? [] },
    pods: scopePods.map(key),
  };
  const cursor = req.pageToken
    ? decodePageToken(req.pageToken, binding)
    : { after: '', afterPod: '', done: [], fanout: FIRST_FANOUT };
  return {
    spec: op.page,
    pageSize: req.pageSize,
    binding,
    cursor,
    maxBytes: itemBudget(t.settings.maxMessageBytes, scopePods.length),
  };
}

/** The pods a page asks: those in scope the token does not say are exhausted. */
export function podsToAsk(paging: Paging | undefined, scopePods: PodRef[]): PodRef[] {
  if (!paging || paging.cursor.done.length === 0) return scopePods;
  const done = new Set(paging.cursor.done);
  return scopePods.filter((_, i) => !done.has(i));
}

/** Items each of `pods` pods is asked for: its share of the page times the fan-out (0: unpaged). */
export function perPodLimit(paging: Paging, pods: number): number {
  if (paging.pageSize === 0) return 0;
  return Math.min(paging.pageSize, Math.ceil((paging.pageSize * paging.cursor.fanout) / Math.max(1, pods)));
}

/** The window the entry's legs carry: the cursor, each pod's limit, the whole item budget. */
export function windowOf(paging: Paging, pods: number): PageWindow {
  return {
    after: paging.cursor.after,
    afterPod: paging.cursor.afterPod,
    limit: perPodLimit(paging, pods),
    maxBytes: paging.maxBytes,
  };
}

/**
 * The window of each pod a representative answers for: the same cursor and size, and an equal share of the
 * bytes it was given (its SiteResponse carries every one of them).
 */
export function shareOf(w: PageWindow, pods: number): PageWindow {
  return { ...w, maxBytes: Math.max(1, Math.floor(w.maxBytes / Math.max(1, pods)) - POD_RESERVE_BYTES) };
}
