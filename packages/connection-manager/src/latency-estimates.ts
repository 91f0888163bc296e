import type { Entry } from './ordering';

/** What a hedge delay derived from a connect round trip adds for the peer's own work, ms. */
export const RTT_HEDGE_SLACK_MS = 10;

/**
 * The other endpoints of an entry's group (same link, same work), asked for only when the entry's own
 * figures are not enough: the common case (an endpoint that has answered a few calls) costs no lookup.
 */
export type Twins = () => readonly Entry[];

/**
 * An endpoint's fastest usual answer in ms: its 5th percentile, or before a few answers the lowest mean of
 * its group (itself and its twins: the same link); undefined before any answer. About one round trip to it,
 * for a sender to keep back from the deadline it passes on and to tell a silent peer.
 */
export function floorMs(entry: Entry, twins: Twins): number | undefined {
  return entry.latency.quantileMs(0.05) ?? smallest([entry, ...twins()].map((e) => e.latency.meanMs()));
}

/**
 * An endpoint's p95 latency in ms, the hedge delay: its own once it has answered a few calls; before that
 * a twin's (same link, same work), else twice the round trip measured when its channel connected (or the
 * smallest of its twins') plus {@link RTT_HEDGE_SLACK_MS} (an answer is a round trip and the peer's work);
 * undefined when nothing is known yet.
 */
export function p95Ms(entry: Entry, twins: Twins): number | undefined {
  const own = entry.latency.quantileMs(0.95);
  if (own !== undefined) return own;
  const group = twins();
  for (const twin of group) {
    const p95 = twin.latency.quantileMs(0.95);
    if (p95 !== undefined) return p95;
  }
  const rtt = entry.connectRttMs ?? smallest(group.map((e) => e.connectRttMs));
  return rtt === undefined ? undefined : 2 * rtt + RTT_HEDGE_SLACK_MS;
}

/** The smallest of the known values; undefined when none is known. */
function smallest(values: readonly (number | undefined)[]): number | undefined {
  let best: number | undefined;
  for (const v of values) if (v !== undefined && (best === undefined || v < best)) best = v;
  return best;
}
