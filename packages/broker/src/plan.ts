import { status } from '@grpc/grpc-js';
import {
  Hedging,
  type AggregateRequest,
  type LocalRequest,
  type Scope,
  type SiteRequest,
  type TargetList,
} from '@wanas/proto';
import type { LegArgs } from './branches';
import { workDeadline } from './call-context';
import { BrokerError, invalidArgument } from './errors';
import { key, type Leg, type PodRef } from './fan-out';
import { podOrder, searchSteps } from './modes/first-fit';
import { parseMode, type RequestMode } from './modes/request-mode';
import type { OperationRegistry } from './operations/registry';
import type { JsonObject, Operation } from './operations/types';
import {
  MAX_SCOPE_ENTRIES,
  MAX_TARGET_ENDPOINTS,
  checkCorrelationId,
  checkHeaders,
  checkIdempotencyKey,
  checkParamsShape,
  positiveMs,
} from './request-limits';
import { isBrokerOfSite, type Topology } from './topology';

/** Most hops a request may travel: entry → site representative → pod. */
export const MAX_HOPS = 2;

/**
 * What a fan-out will do, decided before anything is sent: the operation, who is asked (the legs) and how
 * (all at once, or first-fit one after another), and by when.
 */
export interface FanOutPlan extends Omit<LegArgs, 'trace'> {
  /** Epoch ms the request arrived. */
  started: number;
  /** The legs: all at once, or (`first`) one after another until a pod answers OK (see firstFit). */
  legs: Leg[];
}

/** An Aggregate's plan: a fan-out over the pods in scope, in its request mode. */
export interface AggregatePlan extends FanOutPlan {
  /** Every pod in scope, in topology order. */
  pods: PodRef[];
  mode: RequestMode;
}

/** What planning needs besides the request: where this broker is, the topology, the time, the measured distances. */
export interface PlanContext {
  self: PodRef;
  topology: Topology;
  registry: OperationRegistry;
  /** Epoch ms now. */
  now: number;
  /** The caller's gRPC deadline, epoch ms (undefined: none). */
  callDeadline: number | undefined;
  /** The caller streams the answer (StreamAggregate). */
  streaming: boolean;
  /** Latency measured to a site (first-fit tries the nearest first); undefined before any. */
  siteDistanceMs(site: string): number | undefined;
}

/**
 * Plans an Aggregate, a pure function of the request and its context: the checks (INVALID_ARGUMENT naming
 * the field, or DEADLINE_EXCEEDED when the caller's deadline has passed), the pods in scope, the mode, the
 * budgets, hedging, and the legs in the order they run.
 */
export function planAggregate(req: AggregateRequest, c: PlanContext): AggregatePlan {
  const settings = c.topology.settings;
  checkCorrelationId(req.correlationId);
  const { op, params } = parseOperation(c.registry, req);
  const timeoutMs = positiveMs(req.timeout, 'timeout', settings.defaultTimeoutMs, settings.maxTimeoutMs);
  const attemptTimeoutMs = positiveMs(
    req.attemptTimeout,
    'attempt_timeout',
    settings.attemptTimeoutMs,
    settings.maxTimeoutMs,
  );
  const pods = resolveScope(c.topology, req.scope);
  const end = Math.min(c.now + timeoutMs, c.callDeadline ?? Infinity);
  if (end - c.now <= 0) {
    throw new BrokerError(status.DEADLINE_EXCEEDED, 'the call deadline has already passed; nothing was sent');
  }
  const mode = parseMode(
    req,
    c.topology.sites.map((s) => s.name),
    pods,
  );
  return {
    ...carried(req, op, params),
    started: c.now,
    deadline: workDeadline(end, c.now),
    attemptTimeoutMs,
    hops: 1,
    // By default only reads hedge; a keyed write hedges when the request asks (the pod store dedups it).
    // A first-fit write never does: one search, one pod at a time.
    hedge: hedgingOf(req, settings.hedge && op.idempotent) && (mode.kind === 'all' || op.idempotent),
    pods,
    mode,
    first: mode.kind === 'first',
    legs:
      mode.kind === 'first'
        ? searchSteps(c.self, pods, mode.preferSites, c.siteDistanceMs, op.idempotent)
        : allAtOnce(c.self, pods),
    // Remote pods come back one by one when the answer may come before all of them, or is streamed.
    stream: mode.kind === 'all' && (mode.minOk > 0 || mode.requiredSites.size > 0 || c.streaming),
  };
}

/** What planning a federation request needs: this broker, the topology, the time, the caller's deadline. */
export interface FederationPlanContext {
  self: PodRef;
  topology: Topology;
  registry: OperationRegistry;
  now: number;
  callDeadline: number | undefined;
}

/**
 * Plans a SiteRequest at its representative: the checks (it is for this site, from another site, names
 * only this site's brokers and pods, has not travelled too far), then this site's pods asked — all at once,
 * or first-fit in the order given (none given: a read starts with this broker's own pod, a write keeps the
 * topology's order, the same on every representative) — to a deadline a margin before the one given.
 */
export function planSite(req: SiteRequest, c: FederationPlanContext): FanOutPlan {
  const { self, topology: t } = c;
  const settings = t.settings;
  checkCorrelationId(req.correlationId);
  checkFederationRequest(t, self, 'SiteRequest', req.target, req.hops, req.sourceSite);
  if (req.target?.pod) throw invalidArgument('target.pod', 'must be empty for a SiteRequest');
  if (req.sourceSite === self.site) {
    throw new BrokerError(
      status.FAILED_PRECONDITION,
      `SiteRequest from this broker's own site "${self.site}" refused: same-site peers use LocalRequest`,
    );
  }
  const { op, params } = parseOperation(c.registry, req, 'broker');
  const attemptTimeoutMs = positiveMs(
    req.attemptTimeout,
    'attempt_timeout',
    settings.attemptTimeoutMs,
    settings.maxTimeoutMs,
  );
  const given = Math.min(
    c.now + positiveMs(req.deadline, 'deadline', settings.defaultTimeoutMs, settings.maxTimeoutMs),
    c.callDeadline ?? Infinity,
  );
  const sitePods = (t.sites.find((s) => s.name === self.site)?.pods ?? []).map((p) => p.name);
  req.pods.forEach((p, i) => {
    if (!sitePods.includes(p)) throw invalidArgument(`pods[${i}]`, `site "${self.site}" has no pod "${p}"`);
    if (req.pods.indexOf(p) !== i) throw invalidArgument(`pods[${i}]`, `pod "${p}" is listed twice`);
  });
  // No order given: all at once in topology order; a first-fit search as podOrder says.
  const asked = req.pods.length
    ? req.pods
    : podOrder(
        sitePods.map((pod) => ({ pod })),
        self.pod,
        req.first && op.idempotent,
      ).map((p) => p.pod);
  return {
    ...carried(req, op, params),
    started: c.now,
    deadline: workDeadline(given, c.now),
    attemptTimeoutMs,
    hops: req.hops + 1,
    hedge: req.hedge,
    first: req.first,
    legs: asked.map((pod) => ({
      via: pod === self.pod ? 'own' : 'local',
      site: self.site,
      pods: [{ site: self.site, pod }],
    })),
    stream: false,
  };
}

/** Plans a LocalRequest: the checks, then this broker's own pod, to the deadline given. */
export function planLocal(
  req: LocalRequest,
  c: FederationPlanContext,
): { op: Operation; params: JsonObject; deadline: number } {
  checkCorrelationId(req.correlationId);
  checkFederationRequest(c.topology, c.self, 'LocalRequest', req.target, req.hops);
  if (req.target?.pod !== c.self.pod) {
    throw new BrokerError(
      status.FAILED_PRECONDITION,
      `LocalRequest for pod "${req.target?.site}/${req.target?.pod}" reached a broker of ${c.self.site}/${c.self.pod}`,
    );
  }
  const { op, params } = parseOperation(c.registry, req, 'broker');
  const settings = c.topology.settings;
  const deadline = Math.min(
    c.now + positiveMs(req.deadline, 'deadline', settings.defaultTimeoutMs, settings.maxTimeoutMs),
    c.callDeadline ?? Infinity,
  );
  return { op, params, deadline };
}

/** Refuses federation requests that target another site, list unknown brokers, or travelled too far. */
function checkFederationRequest(
  t: Topology,
  self: PodRef,
  kind: string,
  target: TargetList | undefined,
  hops: number,
  sourceSite?: string,
): void {
  if (!target) throw invalidArgument('target', 'required');
  if (target.site !== self.site) {
    throw new BrokerError(
      status.FAILED_PRECONDITION,
      `${kind} for site "${target.site}" reached a broker of site "${self.site}"`,
    );
  }
  if (target.endpoints.length > MAX_TARGET_ENDPOINTS)
    throw invalidArgument('target.endpoints', `at most ${MAX_TARGET_ENDPOINTS}`);
  target.endpoints.forEach((e, i) => {
    if (!isBrokerOfSite(t, e.brokerId, self.site)) {
      throw new BrokerError(
        status.PERMISSION_DENIED,
        `target.endpoints[${i}]: "${e.brokerId}" is not a broker of site "${self.site}" in this topology`,
      );
    }
  });
  if (hops < 1 || hops > MAX_HOPS) {
    throw new BrokerError(
      status.FAILED_PRECONDITION,
      `hops: ${kind} with hops=${hops} refused (1 to ${MAX_HOPS} allowed; no loops)`,
    );
  }
  if (sourceSite && !t.sites.some((s) => s.name === sourceSite)) {
    throw new BrokerError(
      status.PERMISSION_DENIED,
      `source_site "${sourceSite}" is not a site of this federation`,
    );
  }
}

/** What a plan takes from its request as it is, with the operation and its checked params. */
function carried(
  req: { correlationId: string; headers: Record<string, string>; idempotencyKey: string },
  op: Operation,
  params: JsonObject,
) {
  return {
    correlationId: req.correlationId,
    op,
    params,
    headers: req.headers,
    idempotencyKey: req.idempotencyKey,
  };
}

/** MODE_ALL's legs: the own pod, a LocalRequest per other pod of this site, a SiteRequest per remote site. */
export function allAtOnce(self: PodRef, pods: readonly PodRef[]): Leg[] {
  const bySite = new Map<string, PodRef[]>();
  for (const p of pods) bySite.set(p.site, [...(bySite.get(p.site) ?? []), p]);
  return [...bySite].flatMap(([site, sitePods]): Leg[] =>
    site === self.site
      ? sitePods.map((p) => ({ via: p.pod === self.pod ? 'own' : 'local', site, pods: [p] }))
      : [{ via: 'site', site, pods: sitePods }],
  );
}

/**
 * The checks every request kind shares: the operation exists, headers, params size and shape, the
 * idempotency key, params against the operation's schema, and a key for a state-changing operation.
 * `from` a broker: the entry already held the params to their size and depth limits (and its message was
 * within the gRPC message limit), so that walk over them is not repeated at every hop; the operation's
 * schema still is (a broker of another version may send what this one's schema refuses).
 */
export function parseOperation(
  registry: OperationRegistry,
  req: {
    operation: string;
    headers: Record<string, string>;
    params: JsonObject | undefined;
    idempotencyKey: string;
  },
  from: 'client' | 'broker' = 'client',
): { op: Operation; params: JsonObject } {
  const op = registry.get(req.operation);
  checkHeaders(req.headers);
  if (from === 'client') checkParamsShape(req.params);
  checkIdempotencyKey(req.idempotencyKey);
  const params = registry.parseParams(op, req.params);
  if (!op.idempotent && !req.idempotencyKey) {
    throw invalidArgument(
      'idempotency_key',
      `required for ${op.name}, which changes state (any unique string, e.g. a UUID)`,
    );
  }
  return { op, params };
}

/** The pods a scope selects, in topology order; INVALID_ARGUMENT for names the topology lacks. */
export function resolveScope(t: Topology, scope: Scope | undefined): PodRef[] {
  const sites = scope?.sites ?? [];
  const podsFilter = scope?.pods ?? [];
  if (sites.length > MAX_SCOPE_ENTRIES || podsFilter.length > MAX_SCOPE_ENTRIES) {
    throw invalidArgument('scope', `at most ${MAX_SCOPE_ENTRIES} sites and ${MAX_SCOPE_ENTRIES} pods`);
  }
  const siteNames = new Set(t.sites.map((s) => s.name));
  sites.forEach((s, i) => {
    if (!siteNames.has(s))
      throw invalidArgument(`scope.sites[${i}]`, `unknown site "${s}" (known: ${[...siteNames].join(', ')})`);
  });
  const all = t.sites.flatMap((s) => s.pods.map((p) => ({ site: s.name, pod: p.name })));
  podsFilter.forEach((f, i) => {
    if (!all.some((p) => p.pod === f || key(p) === f)) {
      throw invalidArgument(`scope.pods[${i}]`, `no pod named "${f}" (use "pod" or "site/pod")`);
    }
  });
  const selected = all.filter(
    (p) =>
      (sites.length === 0 || sites.includes(p.site)) &&
      (podsFilter.length === 0 || podsFilter.some((f) => f === p.pod || f === key(p))),
  );
  if (selected.length === 0)
    throw invalidArgument('scope', 'selects no pod (the sites and pods given do not overlap)');
  return selected;
}

/** Whether an Aggregate hedges: its `hedging` field, else the legacy `hedge` flag, else the broker's setting. */
export function hedgingOf(req: Pick<AggregateRequest, 'hedge' | 'hedging'>, byDefault: boolean): boolean {
  switch (req.hedging) {
    case Hedging.HEDGING_ON:
      return true;
    case Hedging.HEDGING_OFF:
      if (req.hedge) {
        throw invalidArgument('hedging', 'HEDGING_OFF contradicts hedge = true; set one of them');
      }
      return false;
    case Hedging.HEDGING_UNSPECIFIED:
      return req.hedge || byDefault;
    default:
      throw invalidArgument(
        'hedging',
        `unknown value ${String(req.hedging)}; use HEDGING_ON, HEDGING_OFF or leave it unset`,
      );
  }
}
