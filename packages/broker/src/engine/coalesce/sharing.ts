/**
 * Identical reads once, at every hop: an Aggregate served from the results cache when its client accepts
 * the answer's age, else joined to an identical one in flight (same client); a SiteRequest joined at its
 * representative, a LocalRequest at its pod. Writes (non-idempotent operations) always run their own.
 * The dispatcher hands each request here with the function that runs it alone.
 */
import {
  AggregateResponse,
  durationToMs,
  msToDuration,
  type AggregateRequest,
  type LocalRequest,
  type LocalResponse,
  type PodResult,
  type SiteRequest,
  type SiteResponse,
} from '@wanas/proto';
import { durationMs } from '@wanas/operations';
import { cancelListenerOf, type CallContext } from '../../call-context';
import type { OperationRegistry } from '../../operations/registry';
import type { Operation } from '../../operations/types';
import type { SharingMetrics } from '../../telemetry/metrics';
import { Coalescer } from './coalescer';
import type { Execution } from './flight';
import { aggregateKey, federationKey } from './keys';
import { ResultsCache } from './results-cache';
import { aggregateResponseBytes } from '../paging/wire-size';

/** What sharing reads of its broker. */
export interface SharingDeps {
  registry: OperationRegistry;
  settings: () => { coalesce: boolean; resultsCacheBytes: number; defaultTimeoutMs: number };
  metrics?: SharingMetrics;
}

/** Runs a request alone, with the context (signal) and the pod reports given. */
type Run<T> = (ctx: CallContext, onPod: ((pod: PodResult) => void) | undefined) => Promise<T>;

/** How an Aggregate would be answered now (for Explain). */
export interface AnswerSource {
  from: 'run' | 'cache' | 'join';
  /** `join`: the execution in flight it would share. */
  joins: string;
}

/** The coalescers of the three hops and the entry's results cache (see the file's comment). */
export class Sharing {
  private readonly aggregates = new Coalescer<AggregateResponse, PodResult>();
  private readonly sites = new Coalescer<SiteResponse, PodResult>();
  private readonly locals = new Coalescer<LocalResponse, PodResult>();
  private readonly cache: ResultsCache;
  /** Bumped by every topology reload: keys made before it never match after. */
  private generation = 0;

  constructor(private readonly deps: SharingDeps) {
    this.cache = new ResultsCache(deps.settings().resultsCacheBytes, aggregateResponseBytes, deps.metrics);
  }

  /** A topology reload: the cache is emptied and no key made before matches again. */
  reset(): void {
    this.generation++;
    this.cache.clear();
  }

  /** An Aggregate: from the cache, joined to one in flight, or run. */
  async aggregate(
    req: AggregateRequest,
    ctx: CallContext,
    onPod: ((pod: PodResult) => void) | undefined,
    run: Run<AggregateResponse>,
  ): Promise<AggregateResponse> {
    const op = this.readOf(req.operation);
    if (!op) return run(ctx, onPod);
    const key = aggregateKey(req, ctx.client ?? '', this.generation);
    const maxAgeMs = acceptedAge(op, req);
    if (maxAgeMs > 0) {
      const hit = this.cache.get(key, maxAgeMs);
      if (hit) {
        ctx.admitted?.setCost(1); // no pod is asked: the least an admitted call weighs
        for (const pod of hit.response.pods) onPod?.(pod);
        return {
          ...hit.response,
          correlationId: req.correlationId,
          sharedFrom: hit.response.correlationId,
          cached: true,
          age: msToDuration(Date.now() - hit.at),
          latency: msToDuration(0),
        };
      }
    }
    const cacheable = cacheAgeMs(op);
    const execute = (exec: Execution<PodResult> | undefined) =>
      run(exec ? sharedContext(ctx, exec) : ctx, onPod && (exec ? (p) => exec.report(p) : onPod)).then(
        (res) => {
          if (cacheable > 0 && isWhole(res)) this.cache.put(key, res, cacheable);
          return res;
        },
      );
    if (!this.deps.settings().coalesce) return execute(undefined);
    const end = endOf(ctx.deadline, durationToMs(req.timeout) || this.deps.settings().defaultTimeoutMs);
    const flightKey = `${onPod ? 's' : 'u'}${key}`;
    // A caller that joins an execution asks no pod of its own.
    if (this.aggregates.inFlight(flightKey)) ctx.admitted?.setCost(1);
    const shared = await this.aggregates.run(
      flightKey,
      req.correlationId,
      { onCancel: cancelListenerOf(ctx), end, onPod },
      execute,
    );
    if (!shared.joined) return shared.value;
    this.deps.metrics?.joined('aggregate');
    return { ...shared.value, correlationId: req.correlationId, sharedFrom: shared.from };
  }

  /** A SiteRequest at its representative: joined to an identical one in flight, or run. */
  site(
    req: SiteRequest,
    ctx: CallContext,
    onPod: ((pod: PodResult) => void) | undefined,
    run: Run<SiteResponse>,
  ): Promise<SiteResponse> {
    return this.federation(this.sites, 'site', req, ctx, onPod, run);
  }

  /** A LocalRequest at its pod: joined to an identical one in flight (one operation call), or run. */
  local(req: LocalRequest, ctx: CallContext, run: Run<LocalResponse>): Promise<LocalResponse> {
    return this.federation(this.locals, 'local', req, ctx, undefined, run);
  }

  /** A federation request (no cache there): joined to an identical one in flight, or run alone. */
  private async federation<T extends { correlationId: string }>(
    flights: Coalescer<T, PodResult>,
    kind: 'site' | 'local',
    req: SiteRequest | LocalRequest,
    ctx: CallContext,
    onPod: ((pod: PodResult) => void) | undefined,
    run: Run<T>,
  ): Promise<T> {
    const key = this.deps.settings().coalesce && this.readOf(req.operation) ? federationKey(req) : undefined;
    if (!key) return run(ctx, onPod);
    const shared = await flights.run(
      `${onPod ? 's' : 'u'}${key}`,
      req.correlationId,
      { onCancel: cancelListenerOf(ctx), end: endOf(ctx.deadline, durationToMs(req.deadline)), onPod },
      (exec) => run(sharedContext(ctx, exec), onPod && ((p) => exec.report(p))),
    );
    if (!shared.joined) return shared.value;
    this.deps.metrics?.joined(kind);
    return { ...shared.value, correlationId: req.correlationId };
  }

  /** How an Aggregate would be answered now: from the cache, by joining an execution, or by its own run. */
  source(req: AggregateRequest, client: string): AnswerSource {
    const op = this.readOf(req.operation);
    if (!op) return { from: 'run', joins: '' };
    const key = aggregateKey(req, client, this.generation);
    const maxAgeMs = acceptedAge(op, req);
    if (maxAgeMs > 0 && this.cache.has(key, maxAgeMs)) return { from: 'cache', joins: '' };
    const joins = this.deps.settings().coalesce ? this.aggregates.inFlight(`u${key}`) : undefined;
    return joins ? { from: 'join', joins } : { from: 'run', joins: '' };
  }

  /** The operation if it is a read this broker serves (a write, or one it does not know, is never shared). */
  private readOf(name: string): Operation | undefined {
    if (!this.deps.registry.has(name)) return undefined;
    const op = this.deps.registry.get(name);
    return op.idempotent ? op : undefined;
  }
}

/** The execution's context: the first caller's, with a signal aborted once every caller has gone. */
function sharedContext(ctx: CallContext, exec: Execution<PodResult>): CallContext {
  return {
    correlationId: ctx.correlationId,
    deadline: ctx.deadline,
    get signal() {
      return exec.signal;
    },
    peer: ctx.peer,
    trace: ctx.trace,
    client: ctx.client,
    admitted: ctx.admitted,
  };
}

/** When a caller needs its answer by: the earlier of its gRPC deadline and its own budget. */
function endOf(callDeadline: number | undefined, budgetMs: number | undefined): number | undefined {
  const own = budgetMs ? Date.now() + budgetMs : undefined;
  if (own === undefined) return callDeadline;
  return callDeadline === undefined ? own : Math.min(own, callDeadline);
}

/** How long an operation's answers may be cached, ms (0: not at all). */
function cacheAgeMs(op: Operation): number {
  return op.cache ? (durationMs(op.cache.maxAge) ?? 0) : 0;
}

/** The age of a cached answer a request accepts: its max_staleness, within the operation's maxAge. */
function acceptedAge(op: Operation, req: AggregateRequest): number {
  const accepted = durationToMs(req.maxStaleness) ?? 0;
  return accepted > 0 ? Math.min(accepted, cacheAgeMs(op)) : 0;
}

/** A whole answer: every pod asked answered OK, nothing cut. Only these are cached. */
function isWhole(res: AggregateResponse): boolean {
  const s = res.summary;
  return !!s && s.podsAsked > 0 && s.podsFailed === 0 && !res.truncated;
}
