/**
 * Planning: a pure function from a request, the topology and the measured site round trips to everything the
 * request will do (see `model.ts`). The executor then only sends, collects and answers; `Explain` shows a
 * plan without running it.
 */
import { status } from '@grpc/grpc-js';
import type { AggregateRequest, LocalRequest, PageWindow, SiteRequest } from '@wanas/proto';
import { workDeadline } from '../call-context';
import { BrokerError, invalidArgument } from '../errors';
import type { OperationRegistry } from '../operations/registry';
import type { JsonObject, Operation } from '../operations/types';
import { checkCorrelationId, positiveMs } from '../request-limits';
import type { Topology } from '@wanas/topology';
import { carried, checkFederationRequest, hedgingOf, parseOperation, resolveScope } from './checks';
import { completionRule } from './modes/completion';
import { podOrder } from './modes/first-fit';
import { parseMode } from './modes/request-mode';
import type { AggregatePlan, Plan, PodRef } from './model';
import { planPaging, podsToAsk, shareOf, windowOf } from './paging/paging';
import { allAtOnce, podLeg, firstFitLegs, type LegContext } from './plan-legs';

/** What planning needs besides the request: where this broker is, the topology, the time, the measured site round trips. */
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
  /** The client the Aggregate is for (carried to every hop). */
  client: string;
  /** Latency measured to a site (first-fit tries the nearest first); undefined before any. */
  siteRoundTripMs(site: string): number | undefined;
}

/**
 * Plans an Aggregate: the checks (INVALID_ARGUMENT naming the field, or DEADLINE_EXCEEDED when the
 * caller's deadline has passed), the pods in scope, the mode, the budgets, hedging, and the legs whole, in
 * the order they run.
 */
export function planAggregate(req: AggregateRequest, ctx: PlanContext): AggregatePlan {
  const settings = ctx.topology.settings;
  checkCorrelationId(req.correlationId);
  const { op, params } = parseOperation(ctx.registry, req);
  const timeoutMs = positiveMs(req.timeout, 'timeout', settings.defaultTimeoutMs, settings.maxTimeoutMs);
  const attemptTimeoutMs = positiveMs(
    req.attemptTimeout,
    'attempt_timeout',
    settings.attemptTimeoutMs,
    settings.maxTimeoutMs,
  );
  const scopePods = resolveScope(ctx.topology, req.scope);
  const paging = planPaging(req, op, params, scopePods, ctx.topology);
  // A listing asks only the pods that still have items after its cursor.
  const pods = podsToAsk(paging, scopePods);
  const end = Math.min(ctx.now + timeoutMs, ctx.callDeadline ?? Infinity);
  if (end - ctx.now <= 0) {
    throw new BrokerError(status.DEADLINE_EXCEEDED, 'the call deadline has already passed; nothing was sent');
  }
  const mode = parseMode(
    req,
    ctx.topology.sites.map((s) => s.name),
    pods,
  );
  const first = mode.kind === 'first';
  // Remote pods come back one by one when the answer may come before all of them, or is streamed.
  const stream = mode.kind === 'all' && (mode.minOk > 0 || mode.requiredSites.size > 0 || ctx.streaming);
  const legContext: LegContext = {
    self: ctx.self,
    topology: ctx.topology,
    op,
    params,
    attemptTimeoutMs,
    first,
    stream,
  };
  return {
    ...carried(req, op, params, ctx.client),
    started: ctx.now,
    deadline: workDeadline(end, ctx.now),
    attemptTimeoutMs,
    hops: 1,
    // By default only reads hedge; a keyed write hedges when the request asks (the pod store dedups it).
    // A first-fit write never does: one search, one pod at a time.
    hedge: hedgingOf(req, settings.hedge && op.idempotent) && (!first || op.idempotent),
    first,
    pods,
    mode,
    stream,
    legs: first
      ? firstFitLegs(legContext, pods, mode.preferSites, ctx.siteRoundTripMs)
      : allAtOnce(legContext, pods),
    schedule: first
      ? { kind: 'first' }
      : { kind: 'all', rule: completionRule(mode.minOk, mode.requiredSites) },
    page: paging ? windowOf(paging, pods.length) : undefined,
    paging,
  };
}

/** What planning a federation request needs: this broker, the topology, the time, the caller's deadline. */
export interface FederationPlanContext {
  self: PodRef;
  topology: Topology;
  registry: OperationRegistry;
  now: number;
  callDeadline: number | undefined;
  /** The client the request is for (an Aggregate's caller; a SiteRequest's `client`). */
  client: string;
}

/**
 * Plans a SiteRequest at its representative: the checks (it is for this site, from another site, names
 * only this site's brokers and pods, has not travelled too far), then this site's pods asked — all at once,
 * or first-fit (a read starting with this broker's own pod; a write in the order given, or the topology's,
 * the same on every representative) — to a deadline a margin before the one given.
 */
export function planSite(req: SiteRequest, ctx: FederationPlanContext): Plan {
  const { self, topology: t } = ctx;
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
  const { op, params } = parseOperation(ctx.registry, req, 'broker');
  const attemptTimeoutMs = positiveMs(
    req.attemptTimeout,
    'attempt_timeout',
    settings.attemptTimeoutMs,
    settings.maxTimeoutMs,
  );
  const given = Math.min(
    ctx.now + positiveMs(req.deadline, 'deadline', settings.defaultTimeoutMs, settings.maxTimeoutMs),
    ctx.callDeadline ?? Infinity,
  );
  const sitePods = (t.sites.find((s) => s.name === self.site)?.pods ?? []).map((p) => p.name);
  req.pods.forEach((p, i) => {
    if (!sitePods.includes(p)) throw invalidArgument(`pods[${i}]`, `site "${self.site}" has no pod "${p}"`);
    if (req.pods.indexOf(p) !== i) throw invalidArgument(`pods[${i}]`, `pod "${p}" is listed twice`);
  });
  const named = (req.pods.length ? req.pods : sitePods).map((pod) => ({ site: self.site, pod }));
  // A first-fit read starts here (no LAN hop); a write keeps the order it was given.
  const asked = req.first ? podOrder(named, self.pod, op.idempotent) : named;
  const legContext: LegContext = {
    self,
    topology: t,
    op,
    params,
    attemptTimeoutMs,
    first: false,
    stream: false,
  };
  return {
    ...carried(req, op, params, ctx.client),
    started: ctx.now,
    deadline: workDeadline(given, ctx.now),
    attemptTimeoutMs,
    hops: req.hops + 1,
    hedge: req.hedge,
    first: req.first,
    legs: asked.map((p) => podLeg(legContext, p)),
    schedule: req.first ? { kind: 'first' } : { kind: 'all', rule: undefined },
    // Each pod's answer rides in this one SiteResponse: each gets an equal share of its bytes.
    page: req.page ? shareOf(req.page, asked.length) : undefined,
  };
}

/** Plans a LocalRequest: the checks, then this broker's own pod, to the deadline given. */
export function planLocal(
  req: LocalRequest,
  ctx: FederationPlanContext,
): { op: Operation; params: JsonObject; deadline: number; page: PageWindow | undefined } {
  checkCorrelationId(req.correlationId);
  checkFederationRequest(ctx.topology, ctx.self, 'LocalRequest', req.target, req.hops);
  if (req.target?.pod !== ctx.self.pod) {
    throw new BrokerError(
      status.FAILED_PRECONDITION,
      `LocalRequest for pod "${req.target?.site}/${req.target?.pod}" reached a broker of ${ctx.self.site}/${ctx.self.pod}`,
    );
  }
  const { op, params } = parseOperation(ctx.registry, req, 'broker');
  const settings = ctx.topology.settings;
  const deadline = Math.min(
    ctx.now + positiveMs(req.deadline, 'deadline', settings.defaultTimeoutMs, settings.maxTimeoutMs),
    ctx.callDeadline ?? Infinity,
  );
  return { op, params, deadline, page: req.page };
}
