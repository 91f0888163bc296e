import { status } from '@grpc/grpc-js';
import type { ConnectionManager } from '@wanas/connection-manager';
import type { HedgeBudget } from '@wanas/iterator';
import {
  Hedging,
  msToDuration,
  type AggregateRequest,
  type AggregateResponse,
  type LocalRequest,
  type LocalResponse,
  type PodResult,
  type SiteRequest,
  type SiteResponse,
  type TargetList,
} from '@wanas/proto';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'winston';
import { Branches, ownPodFirst, type FanOutArgs } from './branches';
import { workDeadline, type CallContext } from './call-context';
import { BrokerError, invalidArgument } from './errors';
import { collect, key, summarize, type PodRef } from './fan-out';
import type { BrokerMetrics } from './metrics';
import { completionRule } from './modes/completion';
import { firstFit, searchSteps, type SearchStep } from './modes/first-fit';
import { parseMode } from './modes/request-mode';
import { requiredSitesFailure } from './modes/required-sites';
import type { OperationRegistry } from './operations/registry';
import type { JsonObject, Operation } from './operations/types';
import { runOwnPod } from './own-pod';
import {
  MAX_SCOPE_ENTRIES,
  MAX_TARGET_ENDPOINTS,
  checkCorrelationId,
  checkHeaders,
  checkIdempotencyKey,
  checkParamsShape,
  positiveMs,
} from './request-limits';
import type { PodStore } from './store/pod-store';
import { isBrokerOfSite, type BrokerInfo, type Topology } from './topology';

export { summarize };

/** Most hops a request may travel: entry → site representative → pod. */
export const MAX_HOPS = 2;

/** Everything the dispatcher works with. */
export interface DispatcherDeps {
  self: BrokerInfo;
  topology: () => Topology;
  cm: ConnectionManager;
  registry: OperationRegistry;
  store: PodStore;
  logger: Logger;
  metrics: BrokerMetrics;
  hedgeBudget: HedgeBudget;
}

/**
 * Turns requests into fan-outs. Aggregate: the own pod, one LocalRequest per other pod of the own site,
 * one SiteRequest per remote site, all in parallel, each under its own connection iterator, all under
 * one overall deadline. SiteRequest: the own pod plus LocalRequests to the site's other pods, to a
 * deadline a little shorter than the one given. LocalRequest: the own pod only.
 */
export class Dispatcher {
  private readonly log: Logger;
  private readonly branches: Branches;

  constructor(private readonly deps: DispatcherDeps) {
    this.log = deps.logger;
    this.branches = new Branches(deps);
  }

  /**
   * Runs an Aggregate. `onPod` (the streaming variant) gets each pod's result as soon as it is final.
   * Resolves with every pod asked, a summary and the reduced result; rejects only with a BrokerError for
   * a request refused before any fan-out (bad input). Answers a margin before the earlier of the caller's
   * gRPC deadline and `timeout` (see {@link workDeadline}); a cancel stops every fan-out it started.
   */
  async aggregate(
    req: AggregateRequest,
    ctx: CallContext,
    onPod?: (pod: PodResult) => void,
  ): Promise<AggregateResponse> {
    const started = Date.now();
    const { self } = this.deps;
    const settings = this.deps.topology().settings;
    checkCorrelationId(req.correlationId);
    const correlationId = req.correlationId || randomUUID();
    const { op, params } = this.parseRequest(req);
    const timeoutMs = positiveMs(req.timeout, 'timeout', settings.defaultTimeoutMs, settings.maxTimeoutMs);
    const attemptTimeoutMs = positiveMs(
      req.attemptTimeout,
      'attempt_timeout',
      settings.attemptTimeoutMs,
      settings.maxTimeoutMs,
    );
    const pods = this.resolveScope(req);
    const end = Math.min(started + timeoutMs, ctx.deadline ?? Infinity);
    if (end - Date.now() <= 0) {
      throw new BrokerError(
        status.DEADLINE_EXCEEDED,
        'the call deadline has already passed; nothing was sent',
      );
    }
    const deadline = workDeadline(end, started);
    const mode = parseMode(
      req,
      this.deps.topology().sites.map((s) => s.name),
      pods,
    );
    const common = {
      correlationId,
      op,
      headers: req.headers,
      idempotencyKey: req.idempotencyKey,
      // By default only reads hedge; a keyed write hedges when the request asks (the pod store dedups it).
      // A first-fit write never does: one search, one pod at a time.
      hedge: hedgingOf(req, settings.hedge && op.idempotent) && (mode.kind === 'all' || op.idempotent),
      deadline,
    };
    let results: PodResult[];
    if (mode.kind === 'first') {
      const distance = (site: string) => this.siteDistanceMs(site);
      const steps = searchSteps(self, pods, mode.preferSites, distance, op.idempotent);
      results = await firstFit(steps, {
        op,
        run: this.stepRunner({ ...common, params }, attemptTimeoutMs, 1, started, ctx.signal),
        deadline,
        signal: ctx.signal,
        onPod,
      });
    } else {
      // Remote pods stream back one by one when the answer may come before all of them, or is streamed.
      const stream = mode.minOk > 0 || mode.requiredSites.size > 0 || onPod !== undefined;
      const branches = this.branches.forAggregate(pods, { ...common, params }, attemptTimeoutMs, stream);
      const rule = completionRule(mode.minOk, mode.requiredSites);
      results = await collect(this.log, branches, { deadline, started, signal: ctx.signal, onPod, rule });
    }
    const response: AggregateResponse = {
      correlationId,
      pods: results,
      summary: summarize(results),
      reduced: op.reduce ? safeReduce(op, results, this.log, correlationId) : undefined,
      latency: msToDuration(Date.now() - started),
      answeredBy: self.id,
    };
    this.deps.metrics.pods(
      'aggregate',
      results.map((r) => r.code),
    );
    if (mode.kind === 'all') {
      const failure = requiredSitesFailure(response, mode.requiredSites);
      if (failure) throw failure;
    }
    return response;
  }

  /**
   * Runs one step of a first-fit search as a branch of its own (see {@link searchSteps}): the own pod, a
   * LocalRequest, or a first-fit SiteRequest; results carry the time since the request started.
   */
  private stepRunner(
    a: FanOutArgs,
    attemptTimeoutMs: number,
    hops: number,
    started: number,
    signal: AbortSignal,
  ): (step: SearchStep) => Promise<PodResult[]> {
    return async (step) => {
      const target = step.via === 'site' ? { site: step.site } : step.pods[0]!;
      const params = a.op.shape?.(a.params, target) ?? a.params;
      const branch =
        step.via === 'own'
          ? this.branches.ownPod({ ...a, params })
          : step.via === 'local'
            ? this.branches.local({ ...a, params, pod: step.pods[0]!, attemptTimeoutMs, hops })
            : this.branches.site({
                ...a,
                params,
                site: step.site,
                pods: step.pods,
                attemptTimeoutMs,
                first: true,
                stream: false,
              });
      const results = await branch.run(signal, () => undefined);
      const latency = msToDuration(Date.now() - started);
      return results.map((r) => ({ ...r, latency }));
    };
  }

  /** The measured distance to a site: the fastest usual answer of any of its brokers (undefined before any). */
  private siteDistanceMs(site: string): number | undefined {
    const brokers =
      this.deps
        .topology()
        .sites.find((s) => s.name === site)
        ?.pods.flatMap((p) => p.brokers) ?? [];
    let best: number | undefined;
    for (const b of brokers) {
      const ms = this.deps.cm.latencyFloorMs({ brokerId: b.id, address: b.wanAddress });
      if (ms !== undefined && (best === undefined || ms < best)) best = ms;
    }
    return best;
  }

  /**
   * Serves a SiteRequest: the own pod plus LocalRequests to the other pods of this site asked, answering a
   * margin before the deadline given (see {@link workDeadline}); the source's cancel stops them all.
   */
  async site(req: SiteRequest, ctx: CallContext, onPod?: (pod: PodResult) => void): Promise<SiteResponse> {
    const started = Date.now();
    const { self } = this.deps;
    const settings = this.deps.topology().settings;
    checkCorrelationId(req.correlationId);
    this.checkFederationRequest('SiteRequest', req.target, req.hops, req.sourceSite);
    if (req.target?.pod) throw invalidArgument('target.pod', 'must be empty for a SiteRequest');
    if (req.sourceSite === self.site) {
      throw new BrokerError(
        status.FAILED_PRECONDITION,
        `SiteRequest from this broker's own site "${self.site}" refused: same-site peers use LocalRequest`,
      );
    }
    const { op, params } = this.parseRequest(req);
    const attemptTimeoutMs = positiveMs(
      req.attemptTimeout,
      'attempt_timeout',
      settings.attemptTimeoutMs,
      settings.maxTimeoutMs,
    );
    const given = Math.min(
      started + positiveMs(req.deadline, 'deadline', settings.defaultTimeoutMs, settings.maxTimeoutMs),
      ctx.deadline ?? Infinity,
    );
    const deadline = workDeadline(given, started);

    const sitePods = this.deps.topology().sites.find((s) => s.name === self.site)?.pods ?? [];
    const known = new Set(sitePods.map((p) => p.name));
    req.pods.forEach((p, i) => {
      if (!known.has(p)) throw invalidArgument(`pods[${i}]`, `site "${self.site}" has no pod "${p}"`);
      if (req.pods.indexOf(p) !== i) throw invalidArgument(`pods[${i}]`, `pod "${p}" is listed twice`);
    });
    // First-fit with no order given: a read starts with this broker's own pod (no LAN hop); a write keeps
    // the topology's order, the same on every representative.
    const all = sitePods.map((p) => p.name);
    const asked = req.pods.length
      ? req.pods
      : op.idempotent
        ? ownPodFirst(
            all.map((pod) => ({ site: self.site, pod })),
            self.pod,
          )
        : all;
    const common = {
      correlationId: req.correlationId,
      op,
      params,
      headers: req.headers,
      idempotencyKey: req.idempotencyKey,
      hedge: req.hedge,
      deadline,
    };
    const podRefs = asked.map((pod) => ({ site: self.site, pod }));
    const pods = req.first
      ? await firstFit(
          podRefs.map((p): SearchStep => ({
            via: p.pod === self.pod ? 'own' : 'local',
            site: p.site,
            pods: [p],
          })),
          {
            op,
            run: this.stepRunner(common, attemptTimeoutMs, req.hops + 1, started, ctx.signal),
            deadline,
            signal: ctx.signal,
            onPod,
          },
        )
      : await collect(this.log, this.branches.forPods(podRefs, common, attemptTimeoutMs, req.hops + 1), {
          deadline,
          started,
          signal: ctx.signal,
          onPod,
        });
    this.deps.metrics.pods(
      'site',
      pods.map((r) => r.code),
    );
    return { correlationId: req.correlationId, answeredBy: self.id, pods };
  }

  /** Serves a LocalRequest: the own pod only; never fans out. The operation stops when the source cancels. */
  async local(req: LocalRequest, ctx: CallContext): Promise<LocalResponse> {
    const { self } = this.deps;
    const settings = this.deps.topology().settings;
    checkCorrelationId(req.correlationId);
    this.checkFederationRequest('LocalRequest', req.target, req.hops);
    if (req.target?.pod !== self.pod) {
      throw new BrokerError(
        status.FAILED_PRECONDITION,
        `LocalRequest for pod "${req.target?.site}/${req.target?.pod}" reached a broker of ${self.site}/${self.pod}`,
      );
    }
    const { op, params } = this.parseRequest(req);
    const started = Date.now();
    const deadline = Math.min(
      started + positiveMs(req.deadline, 'deadline', settings.defaultTimeoutMs, settings.maxTimeoutMs),
      ctx.deadline ?? Infinity,
    );
    const pod = await runOwnPod(this.deps, op, params, {
      correlationId: req.correlationId,
      headers: req.headers,
      idempotencyKey: req.idempotencyKey,
      deadline,
      signal: ctx.signal,
    });
    this.deps.metrics.pods('local', [pod.code]);
    // The operation's own error (a full pool, a missing pool) travels in the answer, not as the call's
    // status: it is the pod's answer, which asking the pod's twin would only repeat.
    return { correlationId: req.correlationId, pod };
  }

  // ---- scope and checks ----

  /**
   * The checks every request kind shares: the operation exists, headers, params size and shape, the
   * idempotency key, params against the operation's schema, and a key for a state-changing operation.
   */
  private parseRequest(req: {
    operation: string;
    headers: Record<string, string>;
    params: JsonObject | undefined;
    idempotencyKey: string;
  }): { op: Operation; params: JsonObject } {
    const { registry } = this.deps;
    const op = registry.get(req.operation);
    checkHeaders(req.headers);
    checkParamsShape(req.params);
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

  /** The pods an Aggregate asks, in topology order; INVALID_ARGUMENT for names the topology lacks. */
  private resolveScope(req: AggregateRequest): PodRef[] {
    const t = this.deps.topology();
    const sites = req.scope?.sites ?? [];
    const podsFilter = req.scope?.pods ?? [];
    if (sites.length > MAX_SCOPE_ENTRIES || podsFilter.length > MAX_SCOPE_ENTRIES) {
      throw invalidArgument('scope', `at most ${MAX_SCOPE_ENTRIES} sites and ${MAX_SCOPE_ENTRIES} pods`);
    }
    const siteNames = new Set(t.sites.map((s) => s.name));
    sites.forEach((s, i) => {
      if (!siteNames.has(s))
        throw invalidArgument(
          `scope.sites[${i}]`,
          `unknown site "${s}" (known: ${[...siteNames].join(', ')})`,
        );
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

  /** Refuses federation requests that target another site, list unknown brokers, or travelled too far. */
  private checkFederationRequest(
    kind: string,
    target: TargetList | undefined,
    hops: number,
    sourceSite?: string,
  ): void {
    const { self } = this.deps;
    const t = this.deps.topology();
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
    if (sourceSite !== undefined && sourceSite && !t.sites.some((s) => s.name === sourceSite)) {
      throw new BrokerError(
        status.PERMISSION_DENIED,
        `source_site "${sourceSite}" is not a site of this federation`,
      );
    }
  }
}

function safeReduce(
  op: Operation,
  results: PodResult[],
  log: Logger,
  correlationId: string,
): JsonObject | undefined {
  try {
    return JSON.parse(JSON.stringify(op.reduce!(results))) as JsonObject;
  } catch (e) {
    log.error('reduce failed', { correlationId, operation: op.name, error: String(e) });
    return { error: `reduce failed: ${(e as Error).message}` };
  }
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
