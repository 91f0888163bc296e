/**
 * The legs of a plan, built whole: for each, the pods in the order asked, the params shaped for where it
 * goes, the brokers its attempts may use (read from the topology now, never while it runs), what it calls
 * and for how long. Pure functions of their arguments.
 */
import type { Endpoint } from '@wanas/proto';
import type { JsonObject, Operation } from '../operations/types';
import { podOf, type Topology } from '@wanas/topology';
import { podOrder } from './modes/first-fit';
import type { Leg, PodRef } from './model';

/** A SiteRequest's attempt timeout is this many LAN attempt timeouts (room for one LAN failover there). */
export const SITE_ATTEMPT_FACTOR = 2;

/**
 * The deadline the next hop is given, ms, from what the attempt has left: a representative's (a SiteRequest)
 * is that minus about one round trip — its fastest usual answer (`floorMs`), at most a quarter of the time —
 * since a gRPC timeout is relative (its clock starts a one-way trip late) and the answer needs another trip
 * back in time; a pod's (a LocalRequest, on the LAN) is what is left.
 */
export function hopDeadlineMs(via: Leg['via'], leftMs: number, floorMs: number | undefined): number {
  const trip = via === 'site' ? Math.min(floorMs ?? 0, leftMs / 4) : 0;
  return Math.max(1, leftMs - trip);
}

/** What building a plan's legs takes. */
export interface LegContext {
  self: PodRef;
  topology: Topology;
  op: Operation;
  params: JsonObject;
  /** A LocalRequest attempt's timeout, ms. */
  attemptTimeoutMs: number;
  /** SiteRequests search their site first-fit. */
  first: boolean;
  /** SiteRequests report their pods one by one (StreamSiteRequest). */
  stream: boolean;
}

/** A leg to one pod of this broker's site: the own pod in-process, another over one LocalRequest. */
export function podLeg(ctx: LegContext, p: PodRef): Leg {
  const own = p.pod === ctx.self.pod;
  const brokers = podOf(ctx.topology, p.site, p.pod)?.brokers ?? [];
  return {
    via: own ? 'own' : 'local',
    site: p.site,
    pods: [p],
    params: ctx.op.shape?.(ctx.params, p) ?? ctx.params,
    method: own ? 'in-process' : 'LocalRequest',
    target: own
      ? undefined
      : { site: p.site, pod: p.pod, endpoints: brokers.map((b) => ({ brokerId: b.id, address: b.address })) },
    sitePods: [],
    attemptTimeoutMs: ctx.attemptTimeoutMs,
    preferBrokers: [],
  };
}

/**
 * A leg to a remote site: one SiteRequest to any of its brokers (their WAN addresses), naming the pods
 * asked — none when it asks every pod of the site all at once. A first-fit search names them in the
 * topology's order: a write's is kept by every representative (a resend walks the same pods, which replay),
 * a read's representative starts with its own pod; a write prefers a representative in the pod it starts
 * with, which saves that search a LAN hop.
 */
export function siteLeg(ctx: LegContext, site: string, pods: PodRef[]): Leg {
  const sitePods = ctx.topology.sites.find((s) => s.name === site)?.pods ?? [];
  const endpoints: Endpoint[] = sitePods
    .flatMap((p) => p.brokers)
    .map((b) => ({ brokerId: b.id, address: b.wanAddress }));
  const everyPod = !ctx.first && sitePods.length === pods.length;
  const startsIn = ctx.first && !ctx.op.idempotent ? pods[0]?.pod : undefined;
  return {
    via: 'site',
    site,
    pods,
    params: ctx.op.shape?.(ctx.params, { site }) ?? ctx.params,
    method: ctx.first || ctx.stream ? 'StreamSiteRequest' : 'SiteRequest',
    target: { site, pod: '', endpoints },
    sitePods: everyPod ? [] : pods.map((p) => p.pod),
    attemptTimeoutMs: ctx.attemptTimeoutMs * SITE_ATTEMPT_FACTOR,
    preferBrokers: startsIn
      ? (sitePods.find((p) => p.name === startsIn)?.brokers ?? []).map((b) => b.id)
      : [],
  };
}

/** MODE_ALL's legs: the own pod, a LocalRequest per other pod of this site, a SiteRequest per remote site. */
export function allAtOnce(ctx: LegContext, pods: readonly PodRef[]): Leg[] {
  const bySite = new Map<string, PodRef[]>();
  for (const p of pods) bySite.set(p.site, [...(bySite.get(p.site) ?? []), p]);
  return [...bySite].flatMap(([site, sitePods]): Leg[] =>
    site === ctx.self.site ? sitePods.map((p) => podLeg(ctx, p)) : [siteLeg(ctx, site, sitePods)],
  );
}

/**
 * The legs of a first-fit search from this broker over the pods in scope: the preferred sites in the
 * order given, then this broker's own site, then every other site nearest first (by `siteRoundTripMs`, the
 * measured latency to a site; unmeasured sites last, then in topology order). Within this broker's site,
 * see {@link podOrder}.
 */
export function firstFitLegs(
  ctx: LegContext,
  scoped: readonly PodRef[],
  preferSites: readonly string[],
  siteRoundTripMs: (site: string) => number | undefined,
): Leg[] {
  const { self } = ctx;
  const sites = [...new Set(scoped.map((p) => p.site))];
  const rest = sites
    .filter((s) => s !== self.site && !preferSites.includes(s))
    .map((s, i) => ({ s, i, d: siteRoundTripMs(s) ?? Infinity }))
    .sort((a, b) => a.d - b.d || a.i - b.i)
    .map((x) => x.s);
  const ordered = [...preferSites, ...(preferSites.includes(self.site) ? [] : [self.site]), ...rest];
  return ordered.flatMap((site): Leg[] => {
    const pods = scoped.filter((p) => p.site === site);
    if (pods.length === 0) return [];
    if (site !== self.site) return [siteLeg(ctx, site, pods)];
    return podOrder(pods, self.pod, ctx.op.idempotent).map((p) => podLeg(ctx, p));
  });
}
