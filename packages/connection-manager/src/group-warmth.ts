/**
 * Which endpoints of a target list (a group) hold a channel: `warmPerTarget` healthy warm ones; a wide,
 * parallel search when the group loses its live endpoint; a few rotating reconnecting channels while every
 * endpoint is down. Decisions here; channels are opened, retired and probed by the connection manager
 * through a {@link ChannelKeeper}.
 */
import type { Entry } from './ordering';

/**
 * Failing channels a group keeps beyond `warmPerTarget` while it has no live endpoint: a dead site is
 * probed a few connections at a time (rotating, one endpoint per maintenance tick), not by keeping a channel
 * to every broker it has.
 */
export const SEARCH_EXTRA = 1;
/**
 * Channels a group may open at once while it searches for a live endpoint after losing the one it had
 * (connection lost or refused): every endpoint not known down is dialled in parallel, so a partitioned
 * site is known down (each endpoint silent) within one connect timeout, not one endpoint per tick.
 */
export const SEARCH_WIDTH = 8;

/** A group as warmth planning sees it. */
export interface WarmGroup {
  /** Rotation counter: which endpoint a search or a rotation starts from (spreads many sources). */
  rotation: number;
}

/** What planning needs from the connection manager. */
export interface ChannelKeeper {
  /** The endpoint's health tier (see ordering.ts `tierOf`): ≤ 1 usable, 2 failing, 3 down. */
  tier(e: Entry): number;
  /** Opens (and connects) the endpoint's channel if it has none. */
  open(e: Entry): void;
  /** Closes the endpoint's channel. */
  retire(e: Entry, why: string): void;
  /** Starts background health probes of the endpoint. */
  probe(e: Entry): void;
  /** Logs a decision about an endpoint. */
  note(message: string, e: Entry): void;
  now(): number;
}

/** The settings planning reads. */
export interface WarmPolicy {
  warmPerTarget: number;
  maxChannelAgeMs: number;
}

/** True while a group that had a live endpoint has none ready: its endpoints are searched in parallel. */
function searching(entries: Entry[]): boolean {
  return (
    !entries.some((e) => e.state === 'ready') &&
    entries.some((e) => e.state === 'down' || e.state === 'reconnecting')
  );
}

/** Keeps `warmPerTarget` healthy warm channels in a group; searches wide when it lost its live one. */
export function ensureWarm(group: WarmGroup, entries: Entry[], k: ChannelKeeper, p: WarmPolicy): void {
  const wide = searching(entries);
  const healthyWarm = entries.filter((e) => e.warm && k.tier(e) <= 1 && !(wide && e.state === 'connecting'));
  let missing = wide ? SEARCH_WIDTH : p.warmPerTarget - healthyWarm.length;
  if (!wide && missing <= 0) return;
  const failingWarm = entries.filter((e) => e.warm && k.tier(e) > 1).length;
  let budget = (wide ? SEARCH_WIDTH : p.warmPerTarget + SEARCH_EXTRA) - failingWarm;
  // A wide search also dials endpoints that failed a call lately but hold no channel now: whether they
  // are reachable is exactly what it must find out (left out, the target could not be known down).
  const candidates = entries
    .filter((e) => !e.warm && (wide ? e.state !== 'down' : k.tier(e) <= 1))
    .sort((a, b) => k.tier(a) - k.tier(b));
  // Start from a rotating offset so brokers of many sources spread over the group's endpoints.
  for (const e of rotate(candidates, group)) {
    if (missing <= 0 || budget <= 0) break;
    e.warm = true;
    k.open(e);
    k.note('warming channel', e);
    missing--;
    budget--;
  }
  // Nothing usable left to warm: keep `warmPerTarget` failing ones reconnecting with back-off (which ones
  // rotates, see searchDeadGroup), so the group is found again when it comes back.
  if (candidates.length === 0) {
    let keep = p.warmPerTarget - failingWarm;
    for (const e of rotate(
      entries.filter((x) => !x.warm),
      group,
    )) {
      if (keep <= 0) break;
      e.warm = true;
      k.open(e);
      keep--;
    }
  }
}

/**
 * A group with no live endpoint: after a wide search, back to the usual few failing warm channels (the
 * oldest failures give way); then the warm channel that failed first gives its place to another endpoint
 * (one per maintenance tick), and closes.
 */
export function searchDeadGroup(group: WarmGroup, entries: Entry[], k: ChannelKeeper, p: WarmPolicy): void {
  if (entries.some((e) => e.warm && k.tier(e) <= 1)) return;
  const failing = entries.filter((e) => e.warm && k.tier(e) > 1);
  const keep = p.warmPerTarget + SEARCH_EXTRA;
  if (failing.length > keep) {
    const byAge = [...failing].sort((a, b) => a.lastFailureAt - b.lastFailureAt);
    for (const e of byAge.slice(0, failing.length - keep)) e.warm = false;
    return;
  }
  if (failing.length < p.warmPerTarget || failing.length === entries.length) return;
  const oldest = failing.reduce((a, b) => (b.lastFailureAt < a.lastFailureAt ? b : a));
  oldest.warm = false;
  if (oldest.inFlight === 0) k.retire(oldest, 'searching the group for a live endpoint');
  ensureWarm(group, entries, k, p);
}

/**
 * At most `warmPerTarget` + {@link SEARCH_EXTRA} channels per group to endpoints that are failing or down:
 * those not warm and idle beyond that close (the oldest failure first), so a site or pod that is down
 * costs a few reconnecting channels, not one per broker. A free slot re-admits one closed failing
 * endpoint per tick (its channel reconnects and is probed), so endpoints that recover rejoin.
 */
export function boundFailing(entries: Entry[], k: ChannelKeeper, p: WarmPolicy): void {
  const cap = p.warmPerTarget + SEARCH_EXTRA;
  const failing = entries.filter((e) => e.client && k.tier(e) > 1);
  const closable = failing
    .filter((e) => !e.warm && e.inFlight === 0)
    .sort((a, b) => a.lastFailureAt - b.lastFailureAt);
  let excess = failing.length - cap;
  for (const e of closable) {
    if (excess <= 0) break;
    k.retire(e, 'failing; probed again in turn');
    excess--;
  }
  if (excess < 0) {
    const waiting = entries.filter((e) => !e.client && k.tier(e) > 1);
    const next = waiting.sort((a, b) => a.lastProbeStartAt - b.lastProbeStartAt)[0];
    if (next) {
      next.lastProbeStartAt = k.now();
      k.open(next);
      k.probe(next);
    }
  }
}

/** One maintenance pass over a group: age rotation, warming, the dead-group search, bounds, surplus. */
export function keepGroup(group: WarmGroup, entries: Entry[], k: ChannelKeeper, p: WarmPolicy): void {
  const now = k.now();
  // Age rotation: move the warm role to an equivalent endpoint; the old channel retires when idle.
  if (p.maxChannelAgeMs > 0 && entries.length > 1) {
    for (const e of entries) {
      if (e.warm && e.client && now - e.createdAt > p.maxChannelAgeMs) {
        e.warm = false;
        k.note('channel aged out: rotating to an equivalent endpoint', e);
      }
    }
  }
  ensureWarm(group, entries, k, p);
  searchDeadGroup(group, entries, k, p);
  boundFailing(entries, k, p);
  // Trim surplus: more healthy warm channels than wanted (e.g. after a failed one recovered, a search).
  const healthyWarm = entries.filter((e) => e.warm && k.tier(e) <= 1);
  for (const e of healthyWarm.slice(p.warmPerTarget)) e.warm = false;
  // A failing warm channel stays warm only while no healthy twin is.
  if (healthyWarm.length >= p.warmPerTarget) {
    for (const e of entries) if (e.warm && k.tier(e) > 1) e.warm = false;
  }
}

/** `xs` starting from the group's rotating offset. */
function rotate<T>(xs: T[], group: WarmGroup): T[] {
  if (xs.length === 0) return xs;
  const from = group.rotation++ % xs.length;
  return [...xs.slice(from), ...xs.slice(0, from)];
}
