import type { ConnectionManager } from '@wanas/connection-manager';
import type { HedgeBudget } from '@wanas/iterator';
import { msToDuration, type GetStatusResponse } from '@wanas/proto';
import type { Admission } from './server/admission/admission';
import type { PodState } from './store/pod-state';
import type { BrokerInfo, Topology } from '@wanas/topology';

/** What a broker's status is made of. */
export interface StatusSources {
  info: BrokerInfo;
  topology: Topology;
  cm: ConnectionManager;
  hedgeBudget: HedgeBudget;
  /** Epoch ms the broker started. */
  started: number;
  /** The pod's store. */
  store: PodState;
  /** The broker's admission, once it exists. */
  admission?: Admission;
  /** Federation sessions opened (undefined when sessions are off) and served. */
  sessions?: { opened?: () => { open: number; opening: number }; served: () => number };
}

/** A broker's view (AdminService/GetStatus, `wanas status`, /status): identity, topology, channels and targets with their health. */
export function brokerStatus({
  info,
  topology,
  cm,
  hedgeBudget,
  started,
  store,
  admission,
  sessions,
}: StatusSources): GetStatusResponse {
  const health = store.health();
  return {
    store: {
      kind: store.kind,
      where: store.where,
      state: health.state,
      stateAge: msToDuration(Date.now() - health.since),
      reason: health.reason,
    },
    broker: {
      id: info.id,
      site: info.site,
      pod: info.pod,
      address: info.address,
      wanAddress: info.wanAddress,
    },
    federation: topology.federation,
    uptime: msToDuration(Date.now() - started),
    sites: topology.sites.map((s) => ({
      name: s.name,
      pods: s.pods.map((p) => ({ name: p.name, brokerIds: p.brokers.map((b) => b.id) })),
    })),
    channels: cm.snapshot().map((r) => ({
      brokerId: r.brokerId,
      address: r.address,
      site: r.site,
      pod: r.pod,
      connectivity: r.connectivity,
      breaker: r.breaker,
      consecutiveFailures: r.consecutiveFailures,
      latency: optionalMs(r.latencyMs),
      inFlight: r.inFlight,
      warm: r.warm,
      age: r.channelAgeMs === undefined ? undefined : msToDuration(r.channelAgeMs),
      calls: r.calls,
      failures: r.failures,
      state: r.state,
      stateAge: msToDuration(r.stateAgeMs),
      stateReason: r.stateReason,
      roundTrip: optionalMs(cm.latencyFloorMs({ brokerId: r.brokerId, address: r.address })),
    })),
    targets: cm.targets().map((t) => ({
      site: t.site,
      pod: t.pod,
      state: t.state,
      stateAge: msToDuration(Date.now() - t.since),
      reason: t.reason,
    })),
    hedgeRequests: hedgeBudget.stats().requests,
    hedges: hedgeBudget.stats().hedges,
    admission: admission && {
      adaptive: topology.settings.admission.adaptive,
      limit: admission.limit('aggregate'),
      inFlight: admission.inFlight('aggregate').cost,
      federationInFlight: admission.inFlight('federation').calls,
      refused: admission.refusals,
      queueDelayMs: admission.queueDelayMs,
    },
    sessions: sessions && sessionCounts(sessions),
  };
}

const optionalMs = (ms: number | undefined) => (ms === undefined ? undefined : msToDuration(ms));

/** The sessions' counts, the pool's read once (it walks every peer's sessions). */
function sessionCounts(s: NonNullable<StatusSources['sessions']>) {
  const opened = s.opened?.();
  return { open: opened?.open ?? 0, opening: opened?.opening ?? 0, served: s.served() };
}
