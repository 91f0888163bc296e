/**
 * Runs requests: each is planned first (`plan.ts`: a pure function of the request, the topology and the
 * measured site round trips), then its plan executed (`executor.ts`), its legs run by `legs.ts`. Aggregate: the
 * own pod, one LocalRequest per other pod of the own site, one SiteRequest per remote site — all at once
 * (MODE_ALL) or one after another (MODE_FIRST) — under one overall deadline. SiteRequest: the own pod plus
 * LocalRequests to the site's other pods. LocalRequest: the own pod only.
 */
import type { ConnectionManager } from '@wanas/connection-manager';
import type { HedgeBudget } from '@wanas/iterator';
import {
  AggregateResponse,
  LocalResponse,
  SiteResponse,
  codeName,
  msToDuration,
  type AggregateRequest,
  type ExplainResponse,
  type LocalRequest,
  type PodResult,
  type SiteRequest,
} from '@wanas/proto';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'winston';
import type { CallContext } from '../call-context';
import type { BrokerMetrics } from '../telemetry/metrics';
import { asJsonObject } from '../operations/json';
import type { OperationRegistry } from '../operations/registry';
import type { JsonObject, Operation } from '../operations/types';
import type { PodState } from '../store/pod-state';
import type { BrokerInfo, Topology } from '@wanas/topology';
import { execute } from './executor';
import { explain } from './explain';
import { LegRunner } from './legs';
import type { SessionPool } from '../session/session-pool';
import type { AggregatePlan, Plan } from './model';
import { requiredSitesFailure } from './modes/required-sites';
import { pagedAnswer, type PagedFields } from './paging/answer';
import { fitPods } from './paging/fit';
import { aggregateResponseBytes, localResponseBytes, siteResponseBytes } from './paging/wire-size';
import { runOwnPod } from './own-pod';
import { planAggregate, planLocal, planSite, type PlanContext } from './plan';
import { Sharing } from './coalesce/sharing';

/** Bytes of the message limit kept for gRPC's framing. */
const MESSAGE_SLACK_BYTES = 64;

/** Everything the dispatcher works with. */
export interface DispatcherDeps {
  self: BrokerInfo;
  topology: () => Topology;
  cm: ConnectionManager;
  registry: OperationRegistry;
  store: PodState;
  logger: Logger;
  metrics: BrokerMetrics;
  hedgeBudget: HedgeBudget;
  /** Failovers away from a peer that refused for load spend a token of this budget (see the iterator). */
  busyRetryBudget?: HedgeBudget;
  /** Sessions to peers (undefined: every request is a unary call). */
  sessions?: SessionPool;
}

/** Plans and runs the requests of one broker. */
export class Dispatcher {
  private readonly log: Logger;
  private readonly legs: LegRunner;
  private readonly sharing: Sharing;

  constructor(private readonly deps: DispatcherDeps) {
    this.log = deps.logger;
    this.legs = new LegRunner(deps);
    this.sharing = new Sharing({
      registry: deps.registry,
      settings: () => deps.topology().settings,
      metrics: deps.metrics.sharingMetrics(),
    });
  }

  /** The topology was reloaded: nothing cached or in flight before is shared after. */
  topologyChanged(): void {
    this.sharing.reset();
  }

  /**
   * The plan an Aggregate would run now (for `Explain`, and for {@link aggregate}): refuses bad input as the
   * Aggregate would (a BrokerError naming the field).
   */
  planAggregate(
    req: AggregateRequest,
    ctx: Pick<CallContext, 'deadline' | 'client'>,
    streaming = false,
  ): AggregatePlan {
    return planAggregate(
      // The server has filled the correlation id; a direct caller may not have.
      req.correlationId ? req : { ...req, correlationId: randomUUID() },
      this.planContext(ctx, streaming),
    );
  }

  /** `Explain`: the plan an Aggregate would run now, with each leg's brokers and their state; nothing is sent. */
  explain(req: AggregateRequest, ctx: Pick<CallContext, 'deadline' | 'client'>): ExplainResponse {
    const plan = this.planAggregate(req, ctx);
    const source = this.sharing.source(req, ctx.client ?? '');
    return {
      ...explain(plan, { cm: this.deps.cm, brokerId: this.deps.self.id, now: Date.now() }),
      answerFrom: source.from,
      joins: source.joins,
    };
  }

  /**
   * Runs an Aggregate. `onPod` (the streaming variant) gets each pod's result as soon as it is final.
   * Resolves with every pod asked, a summary and the reduced result; rejects with a BrokerError for a
   * request refused before any fan-out (bad input), or whose required site failed (with the partial
   * answer as a status detail). Answers a margin before the earlier of the caller's gRPC deadline and
   * `timeout`; a cancel stops every fan-out it started.
   */
  aggregate(
    req: AggregateRequest,
    ctx: CallContext,
    onPod?: (pod: PodResult) => void,
  ): Promise<AggregateResponse> {
    return this.sharing.aggregate(req, ctx, onPod, (c, report) => this.runAggregate(req, c, report));
  }

  /** Runs one Aggregate for its callers (see {@link aggregate}). */
  private async runAggregate(
    req: AggregateRequest,
    ctx: CallContext,
    onPod: ((pod: PodResult) => void) | undefined,
  ): Promise<AggregateResponse> {
    const plan = this.planAggregate(req, ctx, onPod !== undefined);
    // Admitted at the federation's size before it was decoded; its real weight is the pods it asks.
    ctx.admitted?.setCost(plan.pods.length);
    const results = await this.execute(plan, ctx, onPod);
    this.deps.metrics.pods(
      'aggregate',
      results.map((r) => r.code),
    );
    const respond = (fields: PagedFields): AggregateResponse => ({
      correlationId: plan.correlationId,
      summary: summarize(fields.pods),
      latency: msToDuration(Date.now() - plan.started),
      answeredBy: this.deps.self.id,
      sharedFrom: '',
      cached: false,
      age: undefined,
      ...fields,
    });
    if (plan.paging) return respond(pagedAnswer(plan.paging, results, respond));
    const response = fitPods(
      results,
      this.maxMessageBytes(),
      (pods) =>
        respond({
          pods,
          reduced: plan.op.reduce ? safeReduce(plan.op, pods, this.log, plan.correlationId) : undefined,
          nextPageToken: '',
          truncated: false,
        }),
      aggregateResponseBytes,
    );
    const failure =
      plan.mode.kind === 'all' ? requiredSitesFailure(response, plan.mode.requiredSites) : undefined;
    if (failure) throw failure;
    return response;
  }

  /** Whether the request's operation pages (a listing); false for an unknown one (its Aggregate says so). */
  pageable(req: AggregateRequest): boolean {
    return this.deps.registry.has(req.operation) && !!this.deps.registry.get(req.operation).page;
  }

  /**
   * A listing, page after page from `req.page_token` to its end, each given to `send` as soon as it is
   * merged (the `timeout` counts per page; the call's deadline and cancel stop it between or within pages).
   * Resolves with the last page.
   */
  async pages(
    req: AggregateRequest,
    ctx: CallContext,
    send: (page: AggregateResponse) => Promise<void>,
  ): Promise<AggregateResponse> {
    let page = await this.aggregate(req, ctx);
    await send(page);
    while (page.nextPageToken && !ctx.signal.aborted) {
      page = await this.aggregate(
        { ...req, correlationId: page.correlationId, pageToken: page.nextPageToken },
        ctx,
      );
      await send(page);
    }
    return page;
  }

  /**
   * Serves a SiteRequest: the own pod plus LocalRequests to the other pods of this site asked (all at once,
   * or first-fit), answering a margin before the deadline given; the source's cancel stops them all.
   */
  site(req: SiteRequest, ctx: CallContext, onPod?: (pod: PodResult) => void): Promise<SiteResponse> {
    return this.sharing.site(req, ctx, onPod, (c, report) => this.runSite(req, c, report));
  }

  /** Serves one SiteRequest for its callers (see {@link site}). */
  private async runSite(
    req: SiteRequest,
    ctx: CallContext,
    onPod: ((pod: PodResult) => void) | undefined,
  ): Promise<SiteResponse> {
    const plan = planSite(req, this.federationContext(ctx, req.client));
    const pods = await this.execute(plan, ctx, onPod);
    this.deps.metrics.pods(
      'site',
      pods.map((r) => r.code),
    );
    return fitPods(
      pods,
      this.maxMessageBytes(),
      (fitted) => ({ correlationId: req.correlationId, answeredBy: this.deps.self.id, pods: fitted }),
      siteResponseBytes,
    );
  }

  /** Serves a LocalRequest: the own pod only; never fans out. The operation stops when the source cancels. */
  local(req: LocalRequest, ctx: CallContext): Promise<LocalResponse> {
    return this.sharing.local(req, ctx, (c) => this.runLocal(req, c));
  }

  /** Serves one LocalRequest for its callers (see {@link local}). */
  private async runLocal(req: LocalRequest, ctx: CallContext): Promise<LocalResponse> {
    const { op, params, deadline, page } = planLocal(req, this.federationContext(ctx, req.client));
    const pod = await runOwnPod(this.deps, op, params, {
      correlationId: req.correlationId,
      headers: req.headers,
      idempotencyKey: req.idempotencyKey,
      deadline,
      // Read only if the operation waits on it (most do not: no AbortController is made for them).
      get signal() {
        return ctx.signal;
      },
      trace: ctx.trace,
      inCallSpan: true,
      page,
    });
    this.deps.metrics.pods('local', [pod.code]);
    // The operation's own error (a full pool, a missing pool) travels in the answer, not as the call's
    // status: it is the pod's answer, which asking the pod's twin would only repeat.
    return fitPods(
      [pod],
      this.maxMessageBytes(),
      ([fitted]) => ({ correlationId: req.correlationId, pod: fitted }),
      localResponseBytes,
    );
  }

  /** The message limit less room for the transport's framing. */
  private maxMessageBytes(): number {
    return this.deps.topology().settings.maxMessageBytes - MESSAGE_SLACK_BYTES;
  }

  /** Executes a plan for the call `ctx`, its legs run by the leg runner. */
  private execute(plan: Plan, ctx: CallContext, onPod?: (pod: PodResult) => void): Promise<PodResult[]> {
    return execute(plan, {
      runLeg: (leg, signal, report) => this.legs.run({ plan, trace: ctx.trace, leg, signal, report }),
      signal: ctx.signal,
      onPod,
      onLegError: (e) => this.log.error('fan-out leg failed', { error: String(e) }),
    });
  }

  private planContext(ctx: Pick<CallContext, 'deadline' | 'client'>, streaming: boolean): PlanContext {
    return {
      ...this.federationContext(ctx, ctx.client ?? ''),
      streaming,
      siteRoundTripMs: (site) => this.siteRoundTripMs(site),
    };
  }

  private federationContext(ctx: Pick<CallContext, 'deadline'>, client: string) {
    const { self, registry } = this.deps;
    return {
      self,
      topology: this.deps.topology(),
      registry,
      now: Date.now(),
      callDeadline: ctx.deadline,
      client,
    };
  }

  /** The measured round trip to a site: the fastest usual answer of any of its brokers (undefined before any). */
  private siteRoundTripMs(site: string): number | undefined {
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
}

/** Pods asked / ok / failed, and failures by code name. */
export function summarize(results: PodResult[]): AggregateResponse['summary'] {
  const failedByCode: Record<string, number> = {};
  let ok = 0;
  for (const r of results) {
    if (r.code === 0) ok++;
    else failedByCode[codeName(r.code)] = (failedByCode[codeName(r.code)] ?? 0) + 1;
  }
  return { podsAsked: results.length, podsOk: ok, podsFailed: results.length - ok, failedByCode };
}

/** The operation's reduction of the pods' results; an error in it is logged and reported, not thrown. */
function safeReduce(
  op: Operation,
  results: PodResult[],
  log: Logger,
  correlationId: string,
): JsonObject | undefined {
  try {
    return asJsonObject(op.reduce!(results));
  } catch (e) {
    log.error('reduce failed', { correlationId, operation: op.name, error: String(e) });
    return { error: `reduce failed: ${(e as Error).message}` };
  }
}
