import type { Entry } from './ordering';

/** What a hedge delay derived from a connect round trip adds for the peer's own work, ms. */
export const RTT_HEDGE_SLACK_MS = 10;

/**
 * An endpoint's fastest usual answer in ms: its 5th percentile, or before a few answers the lowest mean of
 * its group (itself and its twins: the same link); undefined before any answer. About one round trip to it,
 * for a sender to keep back from the deadline it passes on and to tell a silent peer.
 */
export function floorMs(entry: Entry, twins: readonly Entry[]): number | undefined {
  const own = entry.latency.quantileMs(0.05);
  if (own !== undefined || twins.length === 0) return own ?? entry.latency.meanMs();
  // Too few answers from this one for a percentile: the lowest average of the group (same link).
  let floor: number | undefined;
  for (const twin of [entry, ...twins]) {
    const m = twin.latency.meanMs();
    if (m !== undefined && (floor === undefined || m < floor)) floor = m;
  }
  return floor;
}

/**
 * An endpoint's p95 latency in ms, the hedge delay: its own once it has answered a few calls; before that
 * a twin's (same link, same work), else twice the round trip measured when its channel connected (or the
 * smallest of its twins') plus {@link RTT_HEDGE_SLACK_MS} (an answer is a round trip and the peer's work); undefined
 * when nothing is known yet.
 */
export function p95Ms(entry: Entry, twins: readonly Entry[]): number | undefined {
  const own = entry.latency.quantileMs(0.95);
  if (own !== undefined) return own;
  for (const twin of twins) {
    const p95 = twin.latency.quantileMs(0.95);
    if (p95 !== undefined) return p95;
  }
  let rtt = entry.connectRttMs;
  for (const twin of entry.connectRttMs === undefined ? twins : [])
    if (twin.connectRttMs !== undefined && (rtt === undefined || twin.connectRttMs < rtt))
      rtt = twin.connectRttMs;
  return rtt === undefined ? undefined : 2 * rtt + RTT_HEDGE_SLACK_MS;
}
