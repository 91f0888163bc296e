/**
 * Bounded messages for operations that do not page: an answer that would pass the message limit is never
 * left to the transport to refuse. The pods whose results make it too large, largest first, are answered
 * RESOURCE_EXHAUSTED (each naming its size and the limit) until the rest fits; the others keep theirs.
 */
import { status } from '@grpc/grpc-js';
import type { PodResult } from '@wanas/proto';
import { structBytes } from './wire-size';

/** A pod whose result did not fit: RESOURCE_EXHAUSTED, its size and the limit named. */
function tooLarge(p: PodResult, bytes: number, limit: number): PodResult {
  return {
    ...p,
    code: status.RESOURCE_EXHAUSTED,
    message: `its answer (${bytes} bytes) does not fit in one message with the others (max_message_bytes ${limit}): narrow the scope or the params, or use a pageable operation with page_size`,
    result: undefined,
  };
}

/**
 * The message `build` makes of `pods`, within `limit` bytes as `size` measures it: as it is when it fits,
 * else with the largest results replaced by RESOURCE_EXHAUSTED until it does (or none is left to drop).
 */
export function fitPods<M>(
  pods: PodResult[],
  limit: number,
  build: (pods: PodResult[]) => M,
  size: (message: M) => number,
): M {
  let message = build(pods);
  if (size(message) <= limit) return message;
  const bytes = pods.map((p) => (p.result ? structBytes(p.result) : 0));
  const largestFirst = bytes.map((_, i) => i).sort((a, b) => bytes[b]! - bytes[a]!);
  const out = [...pods];
  for (const i of largestFirst) {
    if (bytes[i] === 0) break;
    out[i] = tooLarge(pods[i]!, bytes[i]!, limit);
    message = build(out);
    if (size(message) <= limit) break;
  }
  return message;
}
