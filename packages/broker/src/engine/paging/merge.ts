/**
 * The entry's merge of one page: a k-way merge of the pods' lists (each already in order, after the cursor)
 * into the federation-wide order. A pod that has more than it sent bounds the page: nothing after its last
 * item may be listed yet (it may hold items before that which it did not send). The page ends there, at
 * `pageSize` items, or where the next item would pass the message's byte budget.
 */
import type { PageSpec } from '@wanas/operations';
import type { PodResult } from '@wanas/proto';
import type { JsonObject } from '../../operations/types';
import { key } from '../model';
import { compareKeys, itemBytes, keyOf } from './pod-page';

/** One merged page. */
export interface MergedPage {
  /** The page's items, each with its `site` and `pod`, in order. */
  items: JsonObject[];
  /** Items of each pod (site/pod) in the page. */
  listed: Map<string, number>;
  /** The last item's key and pod (where the next page starts); empty when the page is empty. */
  after: string;
  afterPod: string;
  /** Pods (site/pod) with nothing after this page: not asked again. */
  exhausted: Set<string>;
  /** Whether anything remains after this page. */
  more: boolean;
  /** The page stopped at the byte budget before `pageSize` (or, unpaged, before the end). */
  cutByBytes: boolean;
}

interface Head {
  pod: string;
  items: JsonObject[];
  next: number;
  truncated: boolean;
}

/** The pod whose next item comes first, among those with items left (undefined: none). */
function firstHead(spec: PageSpec, heads: Head[]): Head | undefined {
  let best: Head | undefined;
  for (const h of heads) {
    if (h.next >= h.items.length) continue;
    if (
      !best ||
      compareKeys(keyOf(spec, h.items[h.next])!, h.pod, keyOf(spec, best.items[best.next])!, best.pod) < 0
    )
      best = h;
  }
  return best;
}

/** The bound: the earliest last item of a pod that has more than it sent. */
function boundOf(spec: PageSpec, heads: Head[]): { key: string; pod: string } | undefined {
  let bound: { key: string; pod: string } | undefined;
  for (const h of heads) {
    if (!h.truncated || h.items.length === 0) continue;
    const k = keyOf(spec, h.items[h.items.length - 1])!;
    if (!bound || compareKeys(k, h.pod, bound.key, bound.pod) < 0) bound = { key: k, pod: h.pod };
  }
  return bound;
}

/**
 * Merges the pages of the pods asked (every one OK) into one page of at most `pageSize` items (0: no limit)
 * and `maxBytes` of items.
 */
export function mergePage(spec: PageSpec, pods: PodResult[], pageSize: number, maxBytes: number): MergedPage {
  const heads: Head[] = pods.map((r) => ({
    pod: key(r),
    items: (r.result?.[spec.items] as JsonObject[] | undefined) ?? [],
    next: 0,
    truncated: r.truncated,
  }));
  const bound = boundOf(spec, heads);
  const page: MergedPage = {
    items: [],
    listed: new Map(),
    after: '',
    afterPod: '',
    exhausted: new Set(),
    more: false,
    cutByBytes: false,
  };
  let bytes = 0;
  for (;;) {
    const h = firstHead(spec, heads);
    if (!h) break;
    const item = h.items[h.next]!;
    const k = keyOf(spec, item)!;
    if (bound && compareKeys(k, h.pod, bound.key, bound.pod) > 0) break;
    if (pageSize > 0 && page.items.length >= pageSize) break;
    const size = itemBytes(item) + 32;
    if (maxBytes > 0 && bytes + size > maxBytes && page.items.length > 0) {
      page.cutByBytes = true;
      break;
    }
    bytes += size;
    const [site, pod] = h.pod.split('/') as [string, string];
    page.items.push({ site, pod, ...item });
    page.listed.set(h.pod, (page.listed.get(h.pod) ?? 0) + 1);
    page.after = k;
    page.afterPod = h.pod;
    h.next++;
  }
  for (const h of heads) {
    if (!h.truncated && h.next >= h.items.length) page.exhausted.add(h.pod);
    else page.more = true;
  }
  return page;
}
