/**
 * Runs one planned leg: the own pod in-process, a LocalRequest to another pod of this site, a SiteRequest
 * to a remote site. The only place that calls FederationService: every call goes through a connection
 * iterator over the leg's target (the equivalent brokers the plan chose) and is counted and logged once.
 * It reads nothing from the topology and reshapes nothing: the leg says it all.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import type { Context } from '@opentelemetry/api';
import type { ConnectionManager } from '@wanas/connection-manager';
import {
  ConnectionIterator,
  type CancellableCall,
  type HedgeBudget,
  type IteratorOutcome,
} from '@wanas/iterator';
import {
  codeName,
  msToDuration,
  type Attempt,
  type Duration,
  type Endpoint,
  type FederationServiceClient,
  type LocalRequest,
  type PodResult,
  type SiteRequest,
  type TargetList,
} from '@wanas/proto';
import type { Logger } from 'winston';
import type { BrokerMetrics } from '../telemetry/metrics';
import type { PodState } from '../store/pod-state';
import type { BrokerInfo } from '@wanas/topology';
import { attemptSpan } from '../telemetry/tracing';
import { attemptToProto, failed, key, type Leg, type Plan } from './model';
import { runOwnPod } from './own-pod';
import { hopDeadlineMs } from './plan-legs';
import { localCall, siteCall } from './site-call';
import type { SessionPool } from '../session/session-pool';

/** What running legs needs: this broker, the connection manager, the pod's store, logs and metrics. */
export interface LegDeps {
  self: BrokerInfo;
  cm: ConnectionManager;
  store: PodState;
  logger: Logger;
  metrics: BrokerMetrics;
  hedgeBudget: HedgeBudget;
  /** Failovers away from a peer that refused for load spend a token of it (unset: not limited). */
  busyRetryBudget?: HedgeBudget;
  /** Sessions to peers: a request goes as a frame on one when it is open (else as a unary call). */
  sessions?: SessionPool;
}

/** One leg to run: of which plan, for the call whose trace context is `trace`, its cancel and early reports. */
export interface LegCall {
  plan: Plan;
  trace: Context;
  leg: Leg;
  /** Aborted when the leg is no longer needed (the deadline, an early answer, the caller's cancel). */
  signal: AbortSignal;
  /** Some pods' results before the leg is over (a streamed SiteRequest). */
  report: (results: PodResult[]) => void;
}

/** Runs the legs of plans. */
export class LegRunner {
  constructor(private readonly deps: LegDeps) {}

  /** Runs one leg; never rejects (a failure is its pods' result). */
  run(call: LegCall): Promise<PodResult[]> {
    switch (call.leg.via) {
      case 'own':
        return this.ownPod(call);
      case 'local':
        return this.local(call);
      case 'site':
        return this.site(call);
    }
  }

  /** The own pod: the operation runs in this process. */
  private async ownPod({ plan, trace, leg, signal }: LegCall): Promise<PodResult[]> {
    return [
      await runOwnPod(this.deps, plan.op, leg.params, {
        correlationId: plan.correlationId,
        headers: plan.headers,
        idempotencyKey: plan.idempotencyKey,
        deadline: plan.deadline,
        signal,
        trace,
        page: plan.page,
      }),
    ];
  }

  /** A LocalRequest to another pod of this site, through a connection iterator over the pod's brokers. */
  private async local(call: LegCall): Promise<PodResult[]> {
    const { plan, leg } = call;
    const { self } = this.deps;
    const pod = leg.pods[0]!;
    const target = leg.target!;
    const { outcome, attempts } = await this.send(call, (client, remaining, options) => {
      const req: LocalRequest = {
        correlationId: plan.correlationId,
        operation: plan.op.name,
        params: leg.params,
        headers: plan.headers,
        target,
        deadline: remaining,
        idempotencyKey: plan.idempotencyKey,
        hops: plan.hops,
        sourceSite: self.site,
        sourceBroker: self.id,
        page: plan.page,
        client: plan.client,
      };
      return localCall(client, req, options.metadata, options.deadline, this.deps.sessions?.pick(client));
    });
    if (!outcome.ok) return [failed(pod, outcome.code, outcome.message, attempts)];
    const answer = outcome.value.pod ?? failed(pod, status.INTERNAL, 'LocalResponse without a pod result');
    // The answering attempt shows the pod's answer (e.g. RESOURCE_EXHAUSTED), not only that the call went through.
    const answered = attempts.map((x) => x.code).lastIndexOf(status.OK);
    if (answered >= 0 && answer.code !== status.OK) {
      attempts[answered] = { ...attempts[answered]!, code: answer.code, message: answer.message };
    }
    return [{ ...answer, site: pod.site, pod: pod.pod, attempts }];
  }

  /**
   * A SiteRequest to a remote site's representative, naming the pods the plan chose in its order (kept by
   * every resend, so a first-fit write walks the same pods, which replay their remembered outcomes). Streamed,
   * its pods are reported one by one as each finishes; first-fit, the result lists the pods tried.
   */
  private async site(call: LegCall): Promise<PodResult[]> {
    const { plan, leg, report } = call;
    const { self } = this.deps;
    const asked = new Set(leg.pods.map(key));
    /** A pod result from the site, if it is one of the pods asked. */
    const valid = (r: PodResult) => r.site === leg.site && asked.has(key(r));
    const how = plan.first ? 'first' : leg.method === 'StreamSiteRequest' ? 'stream' : 'unary';
    const { outcome, attempts } = await this.send(call, (client, remaining, options) => {
      const req: SiteRequest = {
        correlationId: plan.correlationId,
        operation: plan.op.name,
        params: leg.params,
        headers: plan.headers,
        target: leg.target,
        deadline: remaining,
        attemptTimeout: msToDuration(plan.attemptTimeoutMs),
        pods: leg.sitePods,
        idempotencyKey: plan.idempotencyKey,
        hops: 1,
        sourceSite: self.site,
        sourceBroker: self.id,
        hedge: plan.hedge,
        first: plan.first,
        page: plan.page,
        client: plan.client,
      };
      const session = this.deps.sessions?.pick(client);
      return siteCall(
        client,
        req,
        options.metadata,
        options.deadline,
        how,
        (pod) => {
          if (valid(pod)) report([pod]);
        },
        session,
      );
    });
    if (!outcome.ok)
      return leg.pods.map((p) => failed(p, outcome.code, `site ${leg.site}: ${outcome.message}`, attempts));
    const got = outcome.value.filter((r): r is PodResult => !!r && valid(r));
    const withAttempts = (r: PodResult) => ({ ...r, attempts: [...attempts, ...r.attempts] });
    if (plan.first) return got.map(withAttempts);
    const byPod = new Map(got.map((r) => [key(r), r]));
    return leg.pods.map((p) => {
      const r = byPod.get(key(p));
      return r
        ? withAttempts(r)
        : failed(p, status.INTERNAL, `site ${leg.site} answered without this pod`, attempts);
    });
  }

  /**
   * Sends one leg's request through a connection iterator over its target, and records it (metrics and a
   * log line). `call` starts one attempt, given the time it has left and its metadata (which carries the
   * attempt span's context).
   */
  private async send<Res>(
    { plan, trace, leg, signal }: LegCall,
    call: (
      client: FederationServiceClient,
      remaining: Duration,
      options: { deadline: Date; metadata: Metadata; endpoint: Endpoint },
    ) => CancellableCall<Res>,
  ): Promise<{ outcome: IteratorOutcome<Res>; attempts: Attempt[] }> {
    const kind = leg.via === 'site' ? 'site' : 'local';
    const method = leg.method as 'SiteRequest' | 'StreamSiteRequest' | 'LocalRequest';
    const prefer = leg.preferBrokers.length
      ? (ep: Endpoint) => leg.preferBrokers.includes(ep.brokerId)
      : undefined;
    const t0 = Date.now();
    const outcome = await new ConnectionIterator<FederationServiceClient, Res>({
      target: leg.target!,
      source: this.deps.cm,
      deadline: plan.deadline,
      attemptTimeoutMs: leg.attemptTimeoutMs,
      idempotent: plan.op.idempotent || !!plan.idempotencyKey,
      // A representative that acknowledged a SiteRequest is alive and hedges its own pods over its LAN.
      hedge: plan.hedge ? { budget: this.deps.hedgeBudget, onlyUnacknowledged: kind === 'site' } : undefined,
      busyRetryBudget: this.deps.busyRetryBudget,
      prefer,
      signal,
      attempt: (client, ep, deadline, mode) => {
        const left = deadline.getTime() - Date.now();
        const floor = leg.via === 'site' ? this.deps.cm.latencyFloorMs(ep) : undefined; // a LAN hop needs none
        const hop = hopDeadlineMs(leg.via, left, floor);
        const metadata = new Metadata({ waitForReady: mode.waitForReady });
        // Traced, the attempt's span goes into its metadata before the call starts, and ends with its
        // outcome; untraced, nothing is made or attached.
        const span = attemptSpan(trace, metadata, method, ep, mode.hedged);
        const started = call(client, msToDuration(hop), {
          deadline,
          metadata,
          endpoint: ep,
        });
        if (!span) return started;
        started.promise.then(
          () => span.done(status.OK),
          (e: ServiceError) => span.done(e.code ?? status.UNKNOWN, e.details),
        );
        return started;
      },
    }).run();
    this.record(plan, leg, kind, outcome, Date.now() - t0);
    return { outcome, attempts: outcome.attempts.map(attemptToProto) };
  }

  /**
   * Counts a sent request, and logs it: one line per hop is the receiver's "served"; the sender's line is
   * news only when the request failed, failed over or hedged (info), else it is a debug line (built only
   * when debug is on).
   */
  private record<Res>(
    plan: Plan,
    leg: Leg,
    kind: 'site' | 'local',
    outcome: IteratorOutcome<Res>,
    latencyMs: number,
  ): void {
    const code = outcome.ok ? 0 : outcome.code;
    this.deps.metrics.sent(kind, code, latencyMs / 1000, outcome.attempts);
    const level = code !== 0 || outcome.attempts.length > 1 ? 'info' : 'debug';
    if (!this.deps.logger.isLevelEnabled(level)) return;
    const target: TargetList = leg.target!;
    const peer = outcome.ok
      ? outcome.endpoint.brokerId
      : target.pod
        ? `${target.site}/${target.pod}`
        : target.site;
    this.deps.logger.log(level, 'sent', {
      correlationId: plan.correlationId,
      operation: plan.op.name,
      kind,
      direction: 'out',
      peer,
      code: codeName(code),
      latencyMs,
      attempts: outcome.attempts.length,
    });
  }
}
