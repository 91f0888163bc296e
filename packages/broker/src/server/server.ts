import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceService,
  AggregateRequest,
  AggregationServiceService,
  codeName,
  modeToJSON,
  type AggregateResponse,
  type ExplainRequest,
  type GetStatusResponse,
  type ListOperationsResponse,
  type LocalRequest,
  type LocalResponse,
  type SiteRequest,
  type SiteResponse,
  type SiteStreamEvent,
  StreamAggregateRequest,
  type StreamAggregateResponse,
} from '@wanas/proto';
import type { CallContext } from '../call-context';
import type { Dispatcher } from '../engine/dispatcher';
import { toBrokerError } from '../errors';
import { rawRequests } from './admission/client-gate';
import { FEDERATION_SERVICE, SessionServer, type SessionHandlers } from '../session/session-server';
import {
  MAX_MESSAGE_BYTES,
  Rpc,
  fillCorrelationId,
  type FaultInjection,
  type Route,
  type RpcDeps,
} from './rpc';

export { MAX_MESSAGE_BYTES, type FaultInjection };

/** grpc-js server options with a message limit of `maxMessageBytes` (the topology's `maxMessageBytes`). */
export function serverOptions(maxMessageBytes: number): grpc.ServerOptions {
  return {
    ...SERVER_OPTIONS,
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
  };
}

/**
 * grpc-js server options: message limits (the default's), and keepalive that permits our peers' pings (every 600 ms by
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

const AGG = 'wanas.v1.AggregationService';
const FED = 'wanas.v1.FederationService';

/** The request an Aggregate carries, whether called unary or streamed (an empty one when a stream sent none). */
const aggregateOf = (req: StreamAggregateRequest): AggregateRequest =>
  (req.request ??= AggregateRequest.fromPartial({}));

const AGGREGATE: Route<AggregateRequest> = {
  service: AGG,
  method: 'Aggregate',
  type: 'unary',
  kind: 'aggregate',
  caller: 'client',
  correlationId: fillCorrelationId,
  operation: (req) => req.operation,
  correlationTrailer: true,
  decode: (bytes) => AggregateRequest.decode(bytes),
};
const STREAM_AGGREGATE: Route<StreamAggregateRequest> = {
  service: AGG,
  method: 'StreamAggregate',
  type: 'server_stream',
  kind: 'aggregate',
  caller: 'client',
  correlationId: (req) => fillCorrelationId(aggregateOf(req)),
  operation: (req) => aggregateOf(req).operation,
  correlationTrailer: true,
  decode: (bytes) => StreamAggregateRequest.decode(bytes),
};
const SITE: Route<SiteRequest> = {
  service: FED,
  method: 'SiteRequest',
  type: 'unary',
  kind: 'site',
  caller: 'broker',
  correlationId: (req) => req.correlationId,
  operation: (req) => req.operation,
  source: (req) => req.sourceBroker,
  // A representative acknowledges at once: the source then knows it is alive and working, and does not
  // hedge it while it waits on its pods.
  acknowledge: true,
};
const STREAM_SITE: Route<SiteRequest> = { ...SITE, method: 'StreamSiteRequest', type: 'server_stream' };
const LOCAL: Route<LocalRequest> = {
  service: FED,
  method: 'LocalRequest',
  type: 'unary',
  kind: 'local',
  caller: 'broker',
  correlationId: (req) => req.correlationId,
  operation: (req) => req.operation,
  source: (req) => req.sourceBroker,
};

/** What an Aggregate's log line says beyond the common fields: its mode fields when set, pods asked and failed. */
function aggregateFields(req: AggregateRequest, res: AggregateResponse): Record<string, unknown> {
  return {
    ...(req.mode ? { mode: modeToJSON(req.mode) } : {}),
    ...(req.minOk ? { minOk: req.minOk } : {}),
    ...(req.requiredSites.length ? { requiredSites: req.requiredSites.length } : {}),
    pods: res.summary?.podsAsked,
    failed: res.summary?.podsFailed,
  };
}

/** What a SiteRequest's log line adds: the pods answered, the hops travelled. */
const siteFields = (req: SiteRequest, res: SiteResponse) => ({ pods: res.pods.length, hops: req.hops });

/** What a LocalRequest's log line adds: the pod's own failure, when its operation answered one. */
function localFields(req: LocalRequest, res: LocalResponse): Record<string, unknown> {
  const podCode = res.pod?.code ?? 0;
  return { hops: req.hops, ...(podCode ? { podCode: codeName(podCode), error: res.pod?.message } : {}) };
}

/** What AdminService answers: this broker's view, and the operations it serves. */
export interface AdminAnswers {
  status: () => GetStatusResponse;
  operations: () => ListOperationsResponse;
}

/** An AdminService route: clients only, never refused for the in-flight limit. */
function adminRoute<Req>(method: string, operation: (req: Req) => string = () => ''): Route<Req> {
  return {
    service: 'wanas.v1.AdminService',
    method,
    type: 'unary',
    kind: 'admin',
    caller: 'client',
    unlimited: true,
    correlationId: () => '',
    operation,
  };
}
/** The Aggregate an Explain carries (an empty one when it sent none, refused as the Aggregate would be). */
const explainedOf = (req: ExplainRequest): AggregateRequest =>
  (req.request ??= AggregateRequest.fromPartial({}));
const EXPLAIN: Route<ExplainRequest> = {
  ...adminRoute<ExplainRequest>('Explain', (req) => explainedOf(req).operation),
  correlationId: (req) => fillCorrelationId(explainedOf(req)),
};

/** What runs an Aggregate's work and tells `onAggregate` (when given) how it ended. */
function observer(onAggregate: AggregateObserver | undefined) {
  return (
    req: AggregateRequest,
    ctx: CallContext,
    run: () => Promise<AggregateResponse>,
  ): Promise<AggregateResponse> => {
    if (!onAggregate) return run();
    const t0 = Date.now();
    const client = ctx.client ?? '';
    return run().then(
      (res) => {
        onAggregate(req, client, Date.now() - t0, { res });
        return res;
      },
      (e: unknown) => {
        const err = toBrokerError(e);
        onAggregate(req, client, Date.now() - t0, { code: err.code, message: err.details });
        throw e;
      },
    );
  };
}

/** How an Aggregate ended: its answer, or the status of a call that failed as a whole. */
export type AggregateOutcome = { res: AggregateResponse } | { code: number; message: string };

/** Told as each Aggregate served as entry ends (the console's journal). */
export type AggregateObserver = (
  req: AggregateRequest,
  client: string,
  latencyMs: number,
  outcome: AggregateOutcome,
) => void;

/**
 * The broker's gRPC services over a {@link Dispatcher}: thin handlers behind the {@link Rpc} middleware
 * (context, admission, faults, logs, metrics, errors), AdminService (GetStatus, ListOperations, Explain)
 * for operators included.
 */
export function createHandlers(
  dispatcher: Dispatcher,
  adminAnswers: AdminAnswers,
  deps: RpcDeps,
  opts: {
    sessions: boolean;
    /** Called as each Aggregate served as entry ends (the console's journal). */
    onAggregate?: (
      req: AggregateRequest,
      client: string,
      latencyMs: number,
      outcome: AggregateOutcome,
    ) => void;
  },
) {
  const rpc = new Rpc(deps);
  const observed = observer(opts.onAggregate);

  const aggregation = {
    aggregate: rpc.unary(
      AGGREGATE,
      (req, ctx) => observed(req, ctx, () => dispatcher.aggregate(req, ctx)),
      aggregateFields,
    ),
    streamAggregate: rpc.serverStream<StreamAggregateRequest, StreamAggregateResponse, AggregateResponse>(
      STREAM_AGGREGATE,
      async (req, ctx, write, flushed) => {
        const request = aggregateOf(req);
        if (dispatcher.pageable(request)) {
          // A listing streams its pages, one after another, each as soon as it is merged; the last
          // message is the last page's summary (its items were in the page).
          const last = await observed(request, ctx, () =>
            dispatcher.pages(request, ctx, async (page) => {
              write({ event: { $case: 'page', page } });
              await flushed();
            }),
          );
          write({ event: { $case: 'done', done: { ...last, pods: [], reduced: undefined } } });
          return last;
        }
        const res = await observed(request, ctx, () =>
          dispatcher.aggregate(request, ctx, (pod) => write({ event: { $case: 'pod', pod } })),
        );
        // The last message: summary and reduced result; the pods were streamed.
        write({ event: { $case: 'done', done: { ...res, pods: [] } } });
        return res;
      },
      (req, res) => aggregateFields(aggregateOf(req), res),
    ),
  };

  const sessions = opts.sessions ? sessionServer(rpc, dispatcher, deps) : undefined;
  const federation = {
    ...(sessions ? { session: sessions.handle } : {}),
    siteRequest: rpc.unary(SITE, (req, ctx) => dispatcher.site(req, ctx), siteFields),
    streamSiteRequest: rpc.serverStream<SiteRequest, SiteStreamEvent, SiteResponse>(
      STREAM_SITE,
      (req, ctx, write) => dispatcher.site(req, ctx, (pod) => write({ pod })),
      siteFields,
    ),
    localRequest: rpc.unary(LOCAL, (req, ctx) => dispatcher.local(req, ctx), localFields),
  };

  const admin = {
    getStatus: rpc.unary(adminRoute('GetStatus'), () => Promise.resolve(adminAnswers.status())),
    listOperations: rpc.unary(adminRoute('ListOperations'), () => Promise.resolve(adminAnswers.operations())),
    explain: rpc.unary(EXPLAIN, (req, ctx) => Promise.resolve(dispatcher.explain(explainedOf(req), ctx))),
  };

  return {
    addTo(server: grpc.Server): void {
      // Aggregates arrive as bytes: admitted on their headers, then decoded (AGGREGATE's `decode`).
      server.addService(
        rawRequests(AggregationServiceService, ['aggregate', 'streamAggregate']),
        aggregation as unknown as grpc.UntypedServiceImplementation,
      );
      // Without sessions, FederationService/Session answers UNIMPLEMENTED, as a broker of an older version does.
      server.addService(FEDERATION_SERVICE, federation as unknown as grpc.UntypedServiceImplementation);
      server.addService(AdminServiceService, admin as unknown as grpc.UntypedServiceImplementation);
    },
    /** The sessions served (undefined when sessions are off). */
    sessions,
  };
}

/** A session's requests, served as the unary calls they stand for (the same routes: logs, metrics, limits). */
function sessionServer(rpc: Rpc, dispatcher: Dispatcher, deps: RpcDeps): SessionServer {
  const via = { via: 'session' };
  const handlers: SessionHandlers = {
    site: (call, req, onPod) =>
      rpc
        .serve(
          call,
          onPod ? STREAM_SITE : SITE,
          req,
          (ctx) => dispatcher.site(req, ctx, onPod),
          (r, res) => ({ ...siteFields(r, res), ...via }),
        )
        .then(([res]) => res),
    local: (call, req) =>
      rpc
        .serve(
          call,
          LOCAL,
          req,
          (ctx) => dispatcher.local(req, ctx),
          (r, res) => ({ ...localFields(r, res), ...via }),
        )
        .then(([res]) => res),
  };
  return new SessionServer({ handlers, authorize: (call) => deps.security.authorize(call, 'broker') });
}
