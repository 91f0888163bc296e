import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceService,
  AggregationServiceService,
  FederationServiceService,
  codeName,
  modeToJSON,
  type AggregateRequest,
  type AggregateResponse,
  type GetStatusResponse,
  type LocalRequest,
  type LocalResponse,
  type SiteRequest,
  type SiteResponse,
  type SiteStreamEvent,
  type StreamAggregateRequest,
  type StreamAggregateResponse,
} from '@wanas/proto';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'winston';
import type { CallContext } from './call-context';
import type { Dispatcher } from './dispatcher';
import { BrokerError, toBrokerError } from './errors';
import { isValidCorrelationId } from './request-limits';
import type { BrokerMetrics, RequestKind } from './metrics';
import type { BrokerSecurity, CallerKind } from './security';

/**
 * Fault injection for benchmarks and chaos tests: `WANAS_CHAOS_SLOW=RATIO:MS` makes this broker slow to
 * take up that share of its federation requests (SiteRequest, LocalRequest): each waits MS milliseconds
 * before it is acknowledged and worked on, as a broker stalled by GC or overload would. Never set it in
 * production; the broker logs a warning when it is on.
 */
function chaosSlow(log: Logger): { ratio: number; delayMs: number } | undefined {
  const v = process.env.WANAS_CHAOS_SLOW;
  if (!v) return undefined;
  const m = /^(0(?:\.\d+)?|1(?:\.0+)?):(\d+)$/.exec(v);
  if (!m) {
    log.error('WANAS_CHAOS_SLOW ignored: expected RATIO:MS, e.g. 0.05:500', { value: v });
    return undefined;
  }
  log.warn('CHAOS: delaying some federation answers on purpose (WANAS_CHAOS_SLOW)', { value: v });
  return { ratio: Number(m[1]), delayMs: Number(m[2]) };
}

/** Largest message a broker accepts or sends, bytes. */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** One shared reason: `abort()` without one builds a DOMException (with a stack trace) on every call. */
const CANCELLED_BY_CALLER = new Error('the caller cancelled the call');

/**
 * The {@link CallContext} of one incoming call: its deadline, a signal aborted when the caller cancels
 * (grpc-js also reports "cancelled" for some streams that close after their answer was sent; aborting
 * then is harmless), the correlation id and the peer.
 */
function callContext(
  call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  correlationId: string,
  peer: string,
): CallContext {
  const ac = new AbortController();
  call.on('cancelled', () => ac.abort(CANCELLED_BY_CALLER));
  return { correlationId, deadline: deadlineOf(call), signal: ac.signal, peer };
}

/**
 * grpc-js server options: message limits, and keepalive that permits our peers' pings (every 600 ms by
 * default, with or without calls: that is how a partition is noticed within ~1.1 s).
 */
export const SERVER_OPTIONS: grpc.ServerOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 100,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.enable_channelz': 0,
};

function deadlineOf(call: { getDeadline(): grpc.Deadline }): number | undefined {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) ? ms : undefined;
}

/** The `x-correlation-id` trailer; left out when the id is not a valid one (it was refused). */
function correlationMetadata(id: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (isValidCorrelationId(id)) md.set('x-correlation-id', id);
  return md;
}

/** The request-mode fields of an Aggregate worth a log line, when set. */
function modeFields(req: AggregateRequest): Record<string, unknown> {
  return {
    ...(req.mode ? { mode: modeToJSON(req.mode) } : {}),
    ...(req.minOk ? { minOk: req.minOk } : {}),
    ...(req.requiredSites.length ? { requiredSites: req.requiredSites.length } : {}),
  };
}

/** Longest field value copied from a request into a log line. */
const LOG_FIELD_CHARS = 128;
const clip = (s: string) => (s.length > LOG_FIELD_CHARS ? `${s.slice(0, LOG_FIELD_CHARS)}…` : s);

/** Handlers of AggregationService and FederationService over a {@link Dispatcher}, with a log line and metrics per request. */
export function createHandlers(
  dispatcher: Dispatcher,
  log: Logger,
  metrics: BrokerMetrics,
  status: () => GetStatusResponse,
  security: BrokerSecurity,
  limits: () => { maxInFlightAggregates: number; maxInFlightFederation: number },
) {
  const done = (
    kind: RequestKind,
    method: string,
    service: string,
    type: 'unary' | 'server_stream',
    req: { correlationId: string; operation: string },
    ctx: CallContext,
    t0: number,
    answered: number,
    extra: Record<string, unknown> = {},
  ) => {
    const { peer } = ctx;
    // A call its caller cancelled ends CANCELLED, whatever this hop made of what it had by then.
    const code = ctx.signal.aborted ? grpc.status.CANCELLED : answered;
    const latencyMs = Date.now() - t0;
    metrics.served(service, method, type, code, latencyMs / 1000);
    const line = {
      correlationId: clip(req.correlationId),
      operation: clip(req.operation),
      kind,
      direction: 'in',
      peer,
      code: codeName(code),
      latencyMs,
      ...extra,
    };
    if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) log.error('served', line);
    else log.info('served', line);
  };
  const fill = <T extends { correlationId: string }>(req: T): T => {
    if (!req.correlationId) req.correlationId = randomUUID();
    return req;
  };
  const fail = (e: unknown, req: { correlationId: string }) => {
    const err = toBrokerError(e);
    if (err.cause)
      log.error('request failed', { correlationId: req.correlationId, error: String(err.cause) });
    const metadata = correlationMetadata(req.correlationId);
    if (err.statusDetails) metadata.set('grpc-status-details-bin', Buffer.from(err.statusDetails));
    return { err, status: { code: err.code, details: err.details, metadata } };
  };
  const inFlight = { client: 0, broker: 0 };
  const slow = chaosSlow(log);
  /** Resolves at once, or late on purpose when WANAS_CHAOS_SLOW says so (benchmarks only). */
  const chaosDelay = (): Promise<void> | undefined =>
    slow && Math.random() < slow.ratio ? new Promise((r) => setTimeout(r, slow.delayMs)) : undefined;
  /**
   * Acknowledges a SiteRequest (response headers now, the answer later): the source then knows this
   * representative is alive and working, and does not hedge it while it waits on its pods.
   */
  const acknowledge = async (
    call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  ) => {
    await chaosDelay();
    if (!call.cancelled) call.sendMetadata(new grpc.Metadata());
  };
  /**
   * Authorization, then admission: a refused caller gets UNAUTHENTICATED / PERMISSION_DENIED, and a
   * broker at its in-flight limit answers RESOURCE_EXHAUSTED at once, before any work. Resolves with a
   * release function to call when the request ends.
   */
  const guard = (call: Parameters<BrokerSecurity['authorize']>[0], need: CallerKind) =>
    new Promise<() => void>((resolve) => {
      security.authorize(call, need);
      const max = need === 'client' ? limits().maxInFlightAggregates : limits().maxInFlightFederation;
      if (inFlight[need] >= max) {
        throw new BrokerError(
          grpc.status.RESOURCE_EXHAUSTED,
          `broker at its limit of ${max} in-flight ${need === 'client' ? 'aggregates' : 'federation requests'}; retry later or on another broker`,
        );
      }
      inFlight[need]++;
      let released = false;
      resolve(() => {
        if (!released) inFlight[need]--;
        released = true;
      });
    });
  /** Runs `work` once admitted; the in-flight slot is released when it settles. */
  const admitted = <T>(
    call: Parameters<BrokerSecurity['authorize']>[0],
    need: CallerKind,
    work: () => Promise<T>,
  ) => guard(call, need).then((release) => work().finally(release));
  const AGG = 'wanas.v1.AggregationService';
  const FED = 'wanas.v1.FederationService';

  const aggregation: grpc.UntypedServiceImplementation = {
    aggregate(
      call: grpc.ServerUnaryCall<AggregateRequest, AggregateResponse>,
      cb: grpc.sendUnaryData<AggregateResponse>,
    ) {
      const t0 = Date.now();
      const req = fill(call.request);
      const ctx = callContext(call, req.correlationId, call.getPeer());
      admitted(call, 'client', () => dispatcher.aggregate(req, ctx)).then(
        (res) => {
          done('aggregate', 'Aggregate', AGG, 'unary', req, ctx, t0, 0, {
            ...modeFields(req),
            pods: res.summary?.podsAsked,
            failed: res.summary?.podsFailed,
          });
          cb(null, res, correlationMetadata(req.correlationId));
        },
        (e: unknown) => {
          const { err, status } = fail(e, req);
          done('aggregate', 'Aggregate', AGG, 'unary', req, ctx, t0, err.code, {
            error: err.details,
          });
          cb(status);
        },
      );
    },
    streamAggregate(call: grpc.ServerWritableStream<StreamAggregateRequest, StreamAggregateResponse>) {
      const t0 = Date.now();
      const req = fill(call.request.request ?? ({ correlationId: '', operation: '' } as AggregateRequest));
      const ctx = callContext(call, req.correlationId, call.getPeer());
      admitted(call, 'client', () =>
        dispatcher.aggregate(req, ctx, (pod) => {
          if (!call.cancelled) call.write({ event: { $case: 'pod', pod } });
        }),
      ).then(
        (res) => {
          done('aggregate', 'StreamAggregate', AGG, 'server_stream', req, ctx, t0, 0, {
            ...modeFields(req),
            pods: res.summary?.podsAsked,
            failed: res.summary?.podsFailed,
          });
          if (call.cancelled) return;
          call.write({ event: { $case: 'done', done: { ...res, pods: [] } } });
          call.end(correlationMetadata(req.correlationId));
        },
        (e: unknown) => {
          const { err, status } = fail(e, req);
          done('aggregate', 'StreamAggregate', AGG, 'server_stream', req, ctx, t0, err.code, {
            error: err.details,
          });
          call.emit('error', status);
        },
      );
    },
  };

  const federation: grpc.UntypedServiceImplementation = {
    siteRequest(call: grpc.ServerUnaryCall<SiteRequest, SiteResponse>, cb: grpc.sendUnaryData<SiteResponse>) {
      const t0 = Date.now();
      const req = call.request;
      const ctx = callContext(call, req.correlationId, req.sourceBroker || call.getPeer());
      admitted(call, 'broker', async () => {
        await acknowledge(call);
        return dispatcher.site(req, ctx);
      }).then(
        (res) => {
          done('site', 'SiteRequest', FED, 'unary', req, ctx, t0, 0, {
            pods: res.pods.length,
            hops: req.hops,
          });
          cb(null, res);
        },
        (e: unknown) => {
          const { err, status } = fail(e, req);
          done('site', 'SiteRequest', FED, 'unary', req, ctx, t0, err.code, {
            error: err.details,
          });
          cb(status);
        },
      );
    },
    streamSiteRequest(call: grpc.ServerWritableStream<SiteRequest, SiteStreamEvent>) {
      const t0 = Date.now();
      const req = call.request;
      const ctx = callContext(call, req.correlationId, req.sourceBroker || call.getPeer());
      admitted(call, 'broker', async () => {
        await acknowledge(call);
        return dispatcher.site(req, ctx, (pod) => {
          if (!call.cancelled) call.write({ pod });
        });
      }).then(
        (res) => {
          done('site', 'StreamSiteRequest', FED, 'server_stream', req, ctx, t0, 0, {
            pods: res.pods.length,
            hops: req.hops,
          });
          if (!call.cancelled) call.end();
        },
        (e: unknown) => {
          const { err, status } = fail(e, req);
          done('site', 'StreamSiteRequest', FED, 'server_stream', req, ctx, t0, err.code, {
            error: err.details,
          });
          call.emit('error', status);
        },
      );
    },
    localRequest(
      call: grpc.ServerUnaryCall<LocalRequest, LocalResponse>,
      cb: grpc.sendUnaryData<LocalResponse>,
    ) {
      const t0 = Date.now();
      const req = call.request;
      const ctx = callContext(call, req.correlationId, req.sourceBroker || call.getPeer());
      admitted(call, 'broker', async () => {
        await chaosDelay();
        return dispatcher.local(req, ctx);
      }).then(
        (res) => {
          const podCode = res.pod?.code ?? 0;
          done('local', 'LocalRequest', FED, 'unary', req, ctx, t0, 0, {
            hops: req.hops,
            ...(podCode ? { podCode: codeName(podCode), error: clip(res.pod?.message ?? '') } : {}),
          });
          cb(null, res);
        },
        (e: unknown) => {
          const { err, status } = fail(e, req);
          done('local', 'LocalRequest', FED, 'unary', req, ctx, t0, err.code, {
            error: err.details,
          });
          cb(status);
        },
      );
    },
  };

  const admin: grpc.UntypedServiceImplementation = {
    getStatus(
      call: grpc.ServerUnaryCall<unknown, GetStatusResponse>,
      cb: grpc.sendUnaryData<GetStatusResponse>,
    ) {
      const t0 = Date.now();
      try {
        security.authorize(call, 'client');
      } catch (e) {
        const { err, status: st } = fail(e, { correlationId: '' });
        metrics.served('wanas.v1.AdminService', 'GetStatus', 'unary', err.code, (Date.now() - t0) / 1000);
        log.warn('served', {
          kind: 'admin',
          direction: 'in',
          peer: call.getPeer(),
          code: codeName(err.code),
          error: err.details,
        });
        return cb(st);
      }
      const res = status();
      metrics.served('wanas.v1.AdminService', 'GetStatus', 'unary', 0, (Date.now() - t0) / 1000);
      cb(null, res);
    },
  };

  return {
    addTo(server: grpc.Server): void {
      server.addService(AggregationServiceService, aggregation);
      server.addService(FederationServiceService, federation);
      server.addService(AdminServiceService, admin);
    },
  };
}
