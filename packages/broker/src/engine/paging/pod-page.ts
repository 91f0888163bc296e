/**
 * A pageable operation's answer in one pod, cut to its window: the items after the cursor in order, at most
 * the page's limit, within the bytes this pod may use of the message it rides in. A cut is always at an
 * item and says so (`truncated`, and `cursor`: the last item's key), never a transport error; only a single
 * item larger than the pod's share is RESOURCE_EXHAUSTED.
 */
import { status } from '@grpc/grpc-js';
import type { PageRequest, PageSpec } from '@wanas/operations';
import type { PageWindow } from '@wanas/proto';
import { BrokerError } from '../../errors';
import type { JsonObject } from '../../operations/types';
import { delimitedBytes, valueBytes } from './wire-size';

/** A pod's page: its result with the items kept, and whether it has more after them. */
export interface PodPage {
  result: JsonObject;
  truncated: boolean;
  /** The last kept item's key ('' when none was kept). */
  cursor: string;
}

/** An item's order key (undefined when it has none). */
export function keyOf(spec: PageSpec, item: unknown): string | undefined {
  const k = item && typeof item === 'object' ? (item as JsonObject)[spec.key] : undefined;
  return typeof k === 'string' ? k : undefined;
}

/**
 * Orders two strings as their UTF-8 bytes compare (SQL's COLLATE "C"), without encoding them: UTF-16 code
 * units order the same way except that a surrogate (half of a code point above U+FFFF, 4 UTF-8 bytes) sorts
 * after every other unit. The merge compares keys for every item of a page, so this allocates nothing.
 */
export function compareBytes(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const sx = x >= 0xd800 && x <= 0xdfff;
    const sy = y >= 0xd800 && y <= 0xdfff;
    return sx === sy ? x - y : sx ? 1 : -1;
  }
  return a.length - b.length;
}

/** Orders two items of two pods: by key (byte order, as SQL's COLLATE "C"), ties by pod. */
export function compareKeys(a: string, aPod: string, b: string, bPod: string): number {
  if (a !== b) return compareBytes(a, b);
  return aPod < bPod ? -1 : aPod > bPod ? 1 : 0;
}

/**
 * What the operation is asked for: one item more than the page (it tells whether there are more), and one
 * more again when resuming (the cursor's own item may come back: `after` is inclusive).
 */
export function pageRequestOf(w: PageWindow): PageRequest {
  return { after: w.after, limit: w.limit === 0 ? 0 : w.limit + 1 + (w.after ? 1 : 0) };
}

/** The encoded size of one item in a `google.protobuf.ListValue`, bytes. */
export function itemBytes(item: unknown): number {
  return delimitedBytes(valueBytes(item));
}

/** The items of a pageable operation's result; INTERNAL when it breaks the operation's own contract. */
export function itemsOf(spec: PageSpec, result: JsonObject): JsonObject[] {
  const items = result[spec.items];
  if (!Array.isArray(items))
    throw new BrokerError(status.INTERNAL, `the result has no list "${spec.items}" (its page field)`);
  items.forEach((item, i) => {
    if (keyOf(spec, item) === undefined)
      throw new BrokerError(
        status.INTERNAL,
        `${spec.items}[${i}] has no string "${spec.key}" (its order key)`,
      );
  });
  return items as JsonObject[];
}

/** Cuts one pod's result (`pod`: site/pod) to its window. */
export function cutPodPage(spec: PageSpec, result: JsonObject, w: PageWindow, pod: string): PodPage {
  const after = (item: JsonObject) =>
    !w.after && !w.afterPod ? true : compareKeys(keyOf(spec, item)!, pod, w.after, w.afterPod) > 0;
  const items = itemsOf(spec, result)
    .filter(after)
    .sort((a, b) => compareKeys(keyOf(spec, a)!, pod, keyOf(spec, b)!, pod));
  let kept = w.limit > 0 ? Math.min(items.length, w.limit) : items.length;
  if (w.maxBytes > 0) {
    let bytes = 0;
    for (let i = 0; i < kept; i++) {
      bytes += itemBytes(items[i]);
      if (bytes > w.maxBytes) {
        kept = i;
        break;
      }
    }
    if (kept === 0 && items.length > 0)
      throw new BrokerError(
        status.RESOURCE_EXHAUSTED,
        `item "${keyOf(spec, items[0])}" is ${itemBytes(items[0])} bytes, more than the ${w.maxBytes} this pod may use of one message (max_message_bytes)`,
      );
  }
  const page = items.slice(0, kept);
  return {
    result: { ...result, [spec.items]: page },
    truncated: kept < items.length,
    cursor: page.length ? keyOf(spec, page[page.length - 1])! : '',
  };
}
