/**
 * The console's first view: every site as this broker sees it, one cell per pod and per broker — state with
 * since-when and why, the representative it would ask first, measured round trip, in flight, calls and
 * failures — and this broker's own admission (limit, in flight, refusals per second) and sessions, from its
 * GetStatus answer (what the federation view shows of every other site's broker too).
 */
import type { ConnectionManager } from '@wanas/connection-manager';
import { durationToMs, type GetStatusResponse } from '@wanas/proto';
import type { Topology } from '@wanas/topology';

/** One broker's cell. */
export interface BrokerCell {
  id: string;
  /** This broker itself (no channel to itself). */
  self: boolean;
  state: string;
  sinceMs: number;
  reason: string;
  connectivity: string;
  breaker: string;
  roundTripMs: number | null;
  inFlight: number;
  calls: number;
  failures: number;
}

/** One pod's cell. */
export interface PodCell {
  name: string;
  state: string;
  sinceMs: number;
  reason: string;
  brokers: BrokerCell[];
}

/** One site's row. */
export interface SiteRow {
  name: string;
  own: boolean;
  state: string;
  sinceMs: number;
  reason: string;
  /** The broker this broker would ask first for the site ('' for its own site). */
  representative: string;
  roundTripMs: number | null;
  pods: PodCell[];
}

/** What the overview reads. */
export interface OverviewSources {
  status: () => GetStatusResponse;
  topology: () => Topology;
  cm: ConnectionManager;
}

/** Refusals per second from the admission's counter, between two overviews. */
export class RefusalRate {
  private last = { at: Date.now(), count: 0 };

  /** Refusals per second since the last reading a second or more ago, from the running total `count`. */
  perSecond(count: number): number {
    const now = Date.now();
    const secs = (now - this.last.at) / 1000;
    const rate = secs > 0 ? (count - this.last.count) / secs : 0;
    if (secs >= 1) this.last = { at: now, count };
    return Math.max(0, rate);
  }
}

/** The overview now (see the file's comment). */
export function overview(src: OverviewSources, refusals: RefusalRate) {
  const s = src.status();
  const self = s.broker!;
  const ms = (d: Parameters<typeof durationToMs>[0]) => durationToMs(d) ?? 0;
  const channel = new Map(s.channels.map((c) => [c.brokerId, c]));
  const target = (site: string, pod: string) => s.targets.find((t) => t.site === site && t.pod === pod);
  const sites: SiteRow[] = src.topology().sites.map((site) => {
    const own = site.name === self.site;
    const siteTarget = own ? undefined : target(site.name, '');
    const pods = site.pods.map((p): PodCell => {
      const t = own ? target(site.name, p.name) : undefined;
      const brokers = p.brokers.map((b): BrokerCell => {
        const c = channel.get(b.id);
        return {
          id: b.id,
          self: b.id === self.id,
          state: b.id === self.id ? 'up' : (c?.state ?? 'idle'),
          sinceMs: c ? ms(c.stateAge) : ms(s.uptime),
          reason: c?.stateReason ?? '',
          connectivity: c?.connectivity ?? '',
          breaker: c?.breaker ?? '',
          roundTripMs: c?.roundTrip ? ms(c.roundTrip) : c?.latency ? ms(c.latency) : null,
          inFlight: c?.inFlight ?? 0,
          calls: c?.calls ?? 0,
          failures: c?.failures ?? 0,
        };
      });
      const state = t?.state ?? podStateFrom(brokers, own && p.name === self.pod);
      return { name: p.name, state, sinceMs: t ? ms(t.stateAge) : 0, reason: t?.reason ?? '', brokers };
    });
    const rtts = pods.flatMap((p) => p.brokers.map((b) => b.roundTripMs)).filter((x) => x !== null);
    return {
      name: site.name,
      own,
      state: siteTarget?.state ?? worst(pods.map((p) => p.state)),
      sinceMs: siteTarget ? ms(siteTarget.stateAge) : 0,
      reason: siteTarget?.reason ?? '',
      representative: own ? '' : representative(src.cm, site),
      roundTripMs: own || !rtts.length ? null : Math.min(...rtts),
      pods,
    };
  });
  const a = s.admission;
  return {
    broker: self,
    federation: s.federation,
    uptimeMs: ms(s.uptime),
    store: s.store,
    admission: a && { ...a, refusalsPerSec: refusals.perSecond(a.refused) },
    sessions: s.sessions ?? { open: 0, opening: 0, served: 0 },
    hedges: { requests: s.hedgeRequests, hedges: s.hedges },
    sites,
  };
}

/** A pod seen through its brokers' channels (a remote site's pods have no target of their own). */
function podStateFrom(brokers: BrokerCell[], isOwnPod: boolean): string {
  if (isOwnPod) return 'up';
  const states = brokers.map((b) => b.state);
  if (states.some((x) => x === 'ready' || x === 'up')) return 'up';
  if (states.every((x) => x === 'down')) return 'down';
  return states.some((x) => x === 'failing') ? 'degraded' : 'up';
}

const RANK: Record<string, number> = { up: 0, degraded: 1, down: 2 };
function worst(states: string[]): string {
  return states.reduce((w, x) => ((RANK[x] ?? 0) > (RANK[w] ?? 0) ? x : w), 'up');
}

/** The broker of a remote site that a request would try first now. */
function representative(cm: ConnectionManager, site: Topology['sites'][number]): string {
  const endpoints = site.pods.flatMap((p) =>
    p.brokers.map((b) => ({ brokerId: b.id, address: b.wanAddress })),
  );
  return cm.order({ site: site.name, pod: '', endpoints })[0]?.brokerId ?? '';
}
