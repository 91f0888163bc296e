import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import type { Context } from '@opentelemetry/api';
import type { ConnectionManager } from '@wanas/connection-manager';
import {
  ConnectionIterator,
  streamCall,
  unaryCall,
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
  type LocalResponse,
  type PodResult,
  type SiteRequest,
  type SiteResponse,
  type SiteStreamEvent,
  type TargetList,
} from '@wanas/proto';
import type { Logger } from 'winston';
import { attemptToProto, failed, key, type Branch, type Leg, type PodRef } from './fan-out';
import type { BrokerMetrics } from './metrics';
import type { JsonObject, Operation } from './operations/types';
import { podOrder } from './modes/first-fit';
import { runOwnPod } from './own-pod';
import type { PodState } from './store/pod-state';
import { podOf, type BrokerInfo, type Topology } from './topology';
import { attemptSpan } from './tracing';

/** A SiteRequest's attempt timeout is this many LAN attempt timeouts (room for one LAN failover there). */
const SITE_ATTEMPT_FACTOR = 2;

/** What every fan-out request of one incoming request shares. */
export interface FanOutArgs {
  correlationId: string;
  op: Operation;
  params: JsonObject;
  headers: Record<string, string>;
  idempotencyKey: string;
  hedge: boolean;
  /** Epoch ms by which the answer is needed. */
  deadline: number;
  /** The incoming call's trace context: each attempt's span is its child. */
  trace: Context;
}

/** How the legs of one plan are sent. */
export interface LegArgs extends FanOutArgs {
  /** Per-attempt timeout of a LocalRequest (a SiteRequest attempt gets twice this). */
  attemptTimeoutMs: number;
  /** Hops the requests travel (1 from the entry, 2 from a representative). */
  hops: number;
  /** First-fit: a SiteRequest searches its site's pods one after another. */
  first: boolean;
  /** A SiteRequest's pods come back one by one (StreamSiteRequest). */
  stream: boolean;
}

/** What the branches need: this broker, the topology, the connection manager and the pod's store. */
export interface BranchDeps {
  self: BrokerInfo;
  topology: () => Topology;
  cm: ConnectionManager;
  store: PodState;
  logger: Logger;
  metrics: BrokerMetrics;
  hedgeBudget: HedgeBudget;
}

/**
 * Builds the branches of a fan-out: the own pod (in-process), a LocalRequest to another pod of this site,
 * a SiteRequest to a remote site. The only place that calls FederationService: every call goes through a
 * connection iterator over the target's equivalent brokers and is counted and logged once.
 */
export class Branches {
  constructor(private readonly deps: BranchDeps) {}

  /** The branch that runs one leg of a plan (see {@link Leg}). */
  forLeg(leg: Leg, a: LegArgs): Branch {
    const params = a.op.shape?.(a.params, leg.via === 'site' ? { site: leg.site } : leg.pods[0]!) ?? a.params;
    switch (leg.via) {
      case 'own':
        return this.ownPod({ ...a, params });
      case 'local':
        return this.local({ ...a, params, pod: leg.pods[0]! });
      case 'site':
        return this.site({ ...a, params, site: leg.site, pods: leg.pods });
    }
  }

  /** The own pod's branch: the operation runs in this process. */
  private ownPod(a: {
    correlationId: string;
    op: Operation;
    params: JsonObject;
    headers: Record<string, string>;
    idempotencyKey: string;
    deadline: number;
    trace: Context;
  }): Branch {
    const { self } = this.deps;
    return {
      pods: [{ site: self.site, pod: self.pod }],
      cost: 0,
      run: async (signal) => [await runOwnPod(this.deps, a.op, a.params, { ...a, signal })],
    };
  }

  /**
   * Sends one fan-out request (`method`: what its attempts call, named so in their spans) through a
   * connection iterator over `target`, and records it (metrics and a log line). `call` starts one attempt,
   * given the time it has left and its metadata (which carries the attempt span's context).
   */
  private async send<Res>(
    method: 'SiteRequest' | 'StreamSiteRequest' | 'LocalRequest',
    a: FanOutArgs,
    target: TargetList,
    attemptTimeoutMs: number,
    signal: AbortSignal,
    call: (
      client: FederationServiceClient,
      remaining: Duration,
      options: { deadline: Date; metadata: Metadata; endpoint: Endpoint },
    ) => CancellableCall<Res>,
    prefer?: (endpoint: Endpoint) => boolean,
  ): Promise<{ outcome: IteratorOutcome<Res>; attempts: Attempt[] }> {
    const kind = method === 'LocalRequest' ? 'local' : 'site';
    const t0 = Date.now();
    const outcome = await new ConnectionIterator<FederationServiceClient, Res>({
      target,
      source: this.deps.cm,
      deadline: a.deadline,
      attemptTimeoutMs,
      idempotent: a.op.idempotent || !!a.idempotencyKey,
      // A representative that acknowledged a SiteRequest is alive and hedges its own pods over its LAN.
      hedge: a.hedge ? { budget: this.deps.hedgeBudget, onlyUnacknowledged: kind === 'site' } : undefined,
      prefer,
      signal,
      attempt: (client, ep, deadline, mode) => {
        const left = deadline.getTime() - Date.now();
        // The deadline a representative works to is what the attempt has left minus about one round trip
        // (its fastest usual answer, at most a quarter of the time): the gRPC timeout is relative, so its
        // clock starts a one-way trip late, and its answer needs another one to come back in time.
        const trip = kind === 'site' ? Math.min(this.deps.cm.latencyFloorMs(ep) ?? 0, left / 4) : 0;
        const metadata = new Metadata({ waitForReady: mode.waitForReady });
        // Traced, the attempt's span goes into its metadata before the call starts, and ends with its
        // outcome; untraced, nothing is made or attached.
        const span = attemptSpan(a.trace, metadata, method, ep, mode.hedged);
        const started = call(client, msToDuration(Math.max(1, left - trip)), {
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
    const code = outcome.ok ? 0 : outcome.code;
    const latencyMs = Date.now() - t0;
    this.deps.metrics.sent(kind, code, latencyMs / 1000, outcome.attempts);
    // One line per hop is the receiver's "served"; the sender's line is news only when the request failed,
    // failed over or hedged (info), else it is a debug line (built only when debug is on).
    const level = code !== 0 || outcome.attempts.length > 1 ? 'info' : 'debug';
    if (this.deps.logger.isLevelEnabled(level)) {
      const peer = outcome.ok
        ? outcome.endpoint.brokerId
        : target.pod
          ? `${target.site}/${target.pod}`
          : target.site;
      this.deps.logger.log(level, 'sent', {
        correlationId: a.correlationId,
        operation: a.op.name,
        kind,
        direction: 'out',
        peer,
        code: codeName(code),
        latencyMs,
        attempts: outcome.attempts.length,
      });
    }
    return { outcome, attempts: outcome.attempts.map(attemptToProto) };
  }

  /** A LocalRequest to another pod of this site, through a connection iterator over the pod's brokers. */
  private local(a: LegArgs & { pod: PodRef }): Branch {
    const { self } = this.deps;
    return {
      pods: [a.pod],
      cost: 1,
      run: async (signal) => {
        const target: TargetList = {
          site: a.pod.site,
          pod: a.pod.pod,
          endpoints: (podOf(this.deps.topology(), a.pod.site, a.pod.pod)?.brokers ?? []).map((b) => ({
            brokerId: b.id,
            address: b.address,
          })),
        };
        const { outcome, attempts } = await this.send(
          'LocalRequest',
          a,
          target,
          a.attemptTimeoutMs,
          signal,
          (client, remaining, options) => {
            const req: LocalRequest = {
              correlationId: a.correlationId,
              operation: a.op.name,
              params: a.params,
              headers: a.headers,
              target,
              deadline: remaining,
              idempotencyKey: a.idempotencyKey,
              hops: a.hops,
              sourceSite: self.site,
              sourceBroker: self.id,
            };
            return unaryCall<LocalResponse>((cb) =>
              client.localRequest(req, options.metadata, { deadline: options.deadline }, cb),
            );
          },
        );
        if (!outcome.ok) return [failed(a.pod, outcome.code, outcome.message, attempts)];
        const pod = outcome.value.pod ?? failed(a.pod, status.INTERNAL, 'LocalResponse without a pod result');
        // The answering attempt shows the pod's answer (e.g. RESOURCE_EXHAUSTED), not only that the call went through.
        const answered = attempts.map((x) => x.code).lastIndexOf(status.OK);
        if (answered >= 0 && pod.code !== status.OK) {
          attempts[answered] = { ...attempts[answered]!, code: pod.code, message: pod.message };
        }
        return [{ ...pod, site: a.pod.site, pod: a.pod.pod, attempts }];
      },
    };
  }

  /**
   * A SiteRequest to a remote site's representative. `stream`: its pods come back one by one as each
   * finishes (StreamSiteRequest) and are reported early. `first`: a first-fit search of the site in an
   * order fixed before the first attempt and kept by every resend (for a read, the first representative's
   * own pod first; for a write, the topology's), so a resend walks the same pods, which replay their
   * remembered outcomes; the result lists the pods tried.
   */
  private site(a: LegArgs & { site: string; pods: PodRef[] }): Branch {
    const { self } = this.deps;
    const asked = new Set(a.pods.map(key));
    /** A pod result from the site, if it is one of the pods asked. */
    const valid = (r: PodResult) => r.site === a.site && asked.has(key(r));
    return {
      pods: a.pods,
      cost: 2,
      run: async (signal, report) => {
        const sitePods = this.deps.topology().sites.find((s) => s.name === a.site)?.pods ?? [];
        const target: TargetList = {
          site: a.site,
          pod: '',
          endpoints: sitePods
            .flatMap((p) => p.brokers)
            .map((b) => ({ brokerId: b.id, address: b.wanAddress })),
        };
        const allPods = !a.first && sitePods.length === a.pods.length;
        let order: string[] | undefined;
        const { outcome, attempts } = await this.send(
          a.first || a.stream ? 'StreamSiteRequest' : 'SiteRequest',
          a,
          target,
          a.attemptTimeoutMs * SITE_ATTEMPT_FACTOR,
          signal,
          (client, remaining, options) => {
            // Fixed by the first attempt: a read starts with its representative's pod (see podOrder).
            const representative = this.deps.topology().brokers.get(options.endpoint.brokerId)?.pod;
            order ??= podOrder(a.pods, representative, a.op.idempotent).map((p) => p.pod);
            const req: SiteRequest = {
              correlationId: a.correlationId,
              operation: a.op.name,
              params: a.params,
              headers: a.headers,
              target,
              deadline: remaining,
              attemptTimeout: msToDuration(a.attemptTimeoutMs),
              pods: allPods ? [] : order,
              idempotencyKey: a.idempotencyKey,
              hops: 1,
              sourceSite: self.site,
              sourceBroker: self.id,
              hedge: a.hedge,
              first: a.first,
            };
            const how = a.first ? 'first' : a.stream ? 'stream' : 'unary';
            return siteCall(client, req, options.metadata, options.deadline, how, (pod) => {
              if (valid(pod)) report([pod]);
            });
          },
          // A first-fit write searches in the topology's order: a representative in the pod it starts
          // with, when one is as good as the others, saves that search a LAN hop.
          a.first && !a.op.idempotent
            ? (ep) => this.deps.topology().brokers.get(ep.brokerId)?.pod === a.pods[0]?.pod
            : undefined,
        );
        if (!outcome.ok)
          return a.pods.map((p) => failed(p, outcome.code, `site ${a.site}: ${outcome.message}`, attempts));
        const got = outcome.value.filter((r): r is PodResult => !!r && valid(r));
        const withAttempts = (r: PodResult) => ({ ...r, attempts: [...attempts, ...r.attempts] });
        if (a.first) return got.map(withAttempts);
        const byPod = new Map(got.map((r) => [key(r), r]));
        return a.pods.map((p) => {
          const r = byPod.get(key(p));
          return r
            ? withAttempts(r)
            : failed(p, status.INTERNAL, `site ${a.site} answered without this pod`, attempts);
        });
      },
    };
  }
}

/**
 * Starts one SiteRequest attempt; resolves with the pods it answered for. `unary`: SiteRequest, the site's
 * answer whole. `stream`: StreamSiteRequest, each pod reported to `onPod` as it finishes; a representative
 * of an older version (UNIMPLEMENTED) is asked the unary way instead. `first`: StreamSiteRequest with no
 * such fallback, so an older representative, which would not know `first` and would act in every pod
 * listed, is never sent a first-fit write.
 */
function siteCall(
  client: FederationServiceClient,
  req: SiteRequest,
  md: Metadata,
  deadline: Date,
  how: 'unary' | 'stream' | 'first',
  onPod: (pod: PodResult) => void,
): CancellableCall<(PodResult | undefined)[]> {
  const unary = (): CancellableCall<(PodResult | undefined)[]> => {
    const call = unaryCall<SiteResponse>((cb) => client.siteRequest(req, md, { deadline }, cb));
    return { ...call, promise: call.promise.then((res) => res.pods) };
  };
  if (how === 'unary') return unary();
  const stream = streamCall<SiteStreamEvent>(client.streamSiteRequest(req, md, { deadline }), (event) => {
    if (event.pod) onPod(event.pod);
  });
  let current: CancellableCall<(PodResult | undefined)[]> = {
    ...stream,
    promise: stream.promise.then((events) => events.map((e) => e.pod)),
  };
  if (how === 'first') return current;
  const promise = current.promise.catch((err: ServiceError) => {
    if (err.code !== status.UNIMPLEMENTED) throw err;
    current = unary();
    return current.promise;
  });
  return { promise, cancel: () => current.cancel(), acknowledged: () => current.acknowledged?.() ?? false };
}
