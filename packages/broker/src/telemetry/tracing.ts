/**
 * OpenTelemetry traces, configured the standard way: on when an OTLP endpoint is set, by the topology's
 * `tracing.endpoint` or the environment (`OTEL_EXPORTER_OTLP_ENDPOINT` or
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`), off otherwise and with
 * `OTEL_SDK_DISABLED=true` (then every call below returns at once: nothing is recorded, propagated or
 * exported). `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` (or `tracing.protocol`) chooses `http/protobuf` (the
 * default) or `http/json`; `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER(_ARG)` (or `tracing.serviceName`,
 * `tracing.sampler`, `tracing.samplerRatio`); `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_HEADERS` are read by the
 * SDK. An environment variable a broker has wins over the topology. A caller's W3C
 * `traceparent`/`tracestate` is continued; without one a trace starts at the entry.
 */
import * as grpc from '@grpc/grpc-js';
import {
  SpanKind,
  SpanStatusCode,
  INVALID_SPAN_CONTEXT,
  ROOT_CONTEXT,
  propagation,
  trace,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
} from '@opentelemetry/api';
import type { BasicTracerProvider, Sampler, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { codeName } from '@wanas/proto';
import type { Logger } from 'winston';
import type { BrokerInfo, SAMPLERS, Topology } from '@wanas/topology';

const TRACER = 'wanas';

/** A sampler by its standard name, and the ratio of the traceidratio ones. */
export interface SamplerSpec {
  name: (typeof SAMPLERS)[number];
  ratio: number | undefined;
}

/** Tracing as a broker runs it: the topology's `tracing` section with the OTEL_* variables laid over it. */
export interface TracingSettings {
  on: boolean;
  protocol: string;
  /** The traces URL from the topology; undefined when the environment names the endpoint (the exporter reads it). */
  url: string | undefined;
  /** Where spans go, for the log line. */
  endpoint: string | undefined;
  serviceName: string;
  /** The topology's sampler; undefined when `OTEL_TRACES_SAMPLER` is set (the SDK reads it). */
  sampler: SamplerSpec | undefined;
}

/**
 * The settings for `config` (the topology's section) and `env`: a standard variable a broker has wins over
 * the topology (the OpenTelemetry variables keep their usual meaning), and `OTEL_SDK_DISABLED=true` or
 * `OTEL_TRACES_EXPORTER=none` turn tracing off whatever the topology says.
 */
export function tracingSettings(
  config: Topology['tracing'] | undefined,
  env: NodeJS.ProcessEnv = process.env,
): TracingSettings {
  const envEndpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const fromTopology = envEndpoint ? undefined : config?.endpoint;
  const disabled = env.OTEL_SDK_DISABLED === 'true' || env.OTEL_TRACES_EXPORTER === 'none';
  return {
    on: !disabled && !!(envEndpoint || fromTopology || env.OTEL_TRACES_EXPORTER === 'otlp'),
    protocol:
      env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ||
      env.OTEL_EXPORTER_OTLP_PROTOCOL ||
      config?.protocol ||
      'http/protobuf',
    url: fromTopology && `${fromTopology.replace(/\/+$/, '')}/v1/traces`,
    endpoint: envEndpoint || fromTopology,
    serviceName: env.OTEL_SERVICE_NAME || config?.serviceName || 'wanas',
    sampler:
      env.OTEL_TRACES_SAMPLER || !config ? undefined : { name: config.sampler, ratio: config.samplerRatio },
  };
}

/**
 * The process's tracer provider, once started. Several brokers in one process (`--id a,b,c`, benchmarks)
 * share it and its resource (the first one's id); it is shut down when the last of them stops. The SDK is
 * loaded only then: a broker that does not trace never loads it (~2 MB of memory, start-up time).
 */
let provider: BasicTracerProvider | undefined;
let tracer: Tracer | undefined;
let starting: Promise<void> | undefined;
let users = 0;
/** The span of every call while tracing is off (one shared non-recording span: nothing is made per call). */
export const OFF_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
const OFF_CALL = { span: OFF_SPAN, ctx: ROOT_CONTEXT };

/**
 * Starts tracing for this process when the topology or the environment asks for it (see tracingSettings):
 * the OTLP exporter of the protocol asked, a batch span processor and W3C trace-context propagation.
 * Parents are passed explicitly (a call's context travels in its CallContext), not through an
 * async-hooks context manager, whose hooks on every promise would cost every call. Returns how to flush
 * and stop. The settings are read once: a change to the topology's `tracing` applies when a broker restarts.
 */
export async function startTracing(
  self: BrokerInfo,
  config: Topology['tracing'] | undefined,
  log: Logger,
): Promise<{ shutdown(): Promise<void> }> {
  const settings = tracingSettings(config);
  if (!settings.on) return { shutdown: async () => undefined };
  users++;
  try {
    await (starting ??= startProvider(self, settings, log));
  } catch (e) {
    users--;
    starting = undefined;
    throw e;
  }
  return { shutdown: () => stopOne(log) };
}

/**
 * How long a stopping broker waits for its last spans to reach the collector. Spans are best effort: a
 * frozen collector (each export waits out its 10 s timeout) must not hold a broker past its grace or make
 * it exit with an error.
 */
const FLUSH_LIMIT_MS = 2000;

/** One broker of the process stops tracing: the last one flushes and shuts the provider down (bounded). */
async function stopOne(log: Logger): Promise<void> {
  const last = provider;
  if (--users === 0) provider = tracer = starting = undefined;
  // Settled to a value: an export that fails after the limit has passed cannot become an unhandled rejection.
  const done = (users === 0 ? last?.shutdown() : last?.forceFlush())?.then(
    () => 'ok' as const,
    (e: Error) => e,
  );
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), FLUSH_LIMIT_MS).unref()));
  const outcome = await Promise.race([done ?? 'ok', limit]);
  clearTimeout(timer);
  if (outcome === 'late')
    log.warn('tracing: the collector did not take the last spans in time; they are dropped', {
      limitMs: FLUSH_LIMIT_MS,
    });
  else if (outcome instanceof Error)
    log.warn('tracing: the last spans could not be exported', { error: outcome.message });
}

/** Loads the SDK and makes the process's provider, its exporter and the W3C propagator. */
async function startProvider(self: BrokerInfo, settings: TracingSettings, log: Logger): Promise<void> {
  const [sdk, { W3CTraceContextPropagator }, { resourceFromAttributes }] = await Promise.all([
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
  ]);
  const exporter = await exporterFor(settings.protocol, settings.url);
  provider = new sdk.BasicTracerProvider({
    resource: resourceFromAttributes({
      'service.name': settings.serviceName,
      'service.instance.id': self.id,
      'wanas.site': self.site,
      'wanas.pod': self.pod,
    }),
    ...(settings.sampler && { sampler: samplerFor(sdk, settings.sampler) }),
    spanProcessors: [new sdk.BatchSpanProcessor(exporter)],
  });
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  tracer = provider.getTracer(TRACER);
  log.info('tracing on', { protocol: settings.protocol, endpoint: settings.endpoint });
}

/** The SDK's sampler for a standard sampler name (ratio 1 when a traceidratio one has none). */
function samplerFor(sdk: typeof import('@opentelemetry/sdk-trace-base'), spec: SamplerSpec): Sampler {
  const ratio = () => new sdk.TraceIdRatioBasedSampler(spec.ratio ?? 1);
  const make = {
    always_on: () => new sdk.AlwaysOnSampler(),
    always_off: () => new sdk.AlwaysOffSampler(),
    traceidratio: ratio,
    parentbased_always_on: () => new sdk.ParentBasedSampler({ root: new sdk.AlwaysOnSampler() }),
    parentbased_always_off: () => new sdk.ParentBasedSampler({ root: new sdk.AlwaysOffSampler() }),
    parentbased_traceidratio: () => new sdk.ParentBasedSampler({ root: ratio() }),
  };
  return make[spec.name]();
}

/**
 * The OTLP/HTTP exporter for `protocol`, sending to `url` (the topology's), else to the endpoint of the
 * standard variables; headers (e.g. a collector's credentials) only from `OTEL_EXPORTER_OTLP_HEADERS`.
 */
async function exporterFor(protocol: string, url: string | undefined): Promise<SpanExporter> {
  const config = url ? { url } : {};
  if (protocol === 'http/json') {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    return new OTLPTraceExporter(config);
  }
  if (protocol === 'http/protobuf') {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
    return new OTLPTraceExporter(config);
  }
  throw new Error(`OTEL_EXPORTER_OTLP_PROTOCOL: "${protocol}" is not supported (http/protobuf or http/json)`);
}

const metadataGetter: TextMapGetter<grpc.Metadata> = {
  keys: (md) => Object.keys(md.getMap()),
  get: (md, key) => {
    const v = md.get(key);
    return v.length ? v.map(String) : undefined;
  },
};
const metadataSetter: TextMapSetter<grpc.Metadata> = { set: (md, key, value) => md.set(key, value) };

/** The attributes every wanas RPC span carries (OpenTelemetry RPC conventions, plus the correlation id). */
function rpcAttributes(service: string, method: string, correlationId: string) {
  return {
    'rpc.system': 'grpc',
    'rpc.service': service,
    'rpc.method': method,
    'wanas.correlation_id': correlationId,
  };
}

/**
 * The server span of one incoming call, continuing the caller's trace from its metadata, and the context
 * to run the handler in. Non-recording (and free) when tracing is off.
 */
export function serverSpan(
  md: grpc.Metadata,
  service: string,
  method: string,
  correlationId: string,
): { span: Span; ctx: Context } {
  if (!tracer) return OFF_CALL;
  const parent = propagation.extract(ROOT_CONTEXT, md, metadataGetter);
  const span = tracer.startSpan(
    `${service}/${method}`,
    { kind: SpanKind.SERVER, attributes: rpcAttributes(service, method, correlationId) },
    parent,
  );
  return { span, ctx: trace.setSpan(parent, span) };
}

/** Ends a span with the gRPC status it ended with. */
export function endSpan(span: Span, code: number, message?: string): void {
  if (!span.isRecording()) return span.end();
  span.setAttribute('rpc.grpc.status_code', code);
  if (code !== grpc.status.OK)
    span.setStatus({ code: SpanStatusCode.ERROR, message: message ?? codeName(code) });
  span.end();
}

/**
 * A client span for one attempt of a fan-out request (a child of the current call's span), its context
 * injected into `md` so the peer's server span is its child. `done` ends it with the attempt's outcome.
 * Undefined while tracing is off: the caller then attaches nothing to the attempt.
 * The correlation id is on the parent and on the peer's server span, not repeated here (every attribute
 * is encoded and exported once per span).
 */
export function attemptSpan(
  parent: Context,
  md: grpc.Metadata,
  method: 'SiteRequest' | 'LocalRequest' | 'StreamSiteRequest',
  endpoint: { brokerId: string; address: string },
  hedged: boolean,
): { done(code: number, message?: string): void } | undefined {
  if (!tracer) return undefined;
  const span = tracer.startSpan(
    `wanas.v1.FederationService/${method}`,
    {
      kind: SpanKind.CLIENT,
      attributes: {
        'rpc.system': 'grpc',
        'rpc.service': 'wanas.v1.FederationService',
        'rpc.method': method,
        'server.address': endpoint.address,
        'wanas.peer_broker': endpoint.brokerId,
        'wanas.hedged': hedged,
      },
    },
    parent,
  );
  // Also when not sampled: the peer must see the decision (flags 00), or it would start a trace of its own
  // and sample that hop by itself (partial traces, rooted in the middle of an aggregate).
  propagation.inject(trace.setSpan(parent, span), md, metadataSetter);
  return { done: (code, message) => endSpan(span, code, message) };
}

/**
 * Runs an operation in this pod under a span: its own, a child of the call's (`parent`) — or, with
 * `inCallSpan`, the call's server span itself, when the call does nothing but this operation (a
 * LocalRequest): one span fewer per pod and the same information, since the server span then carries
 * `wanas.operation` and the operation's error as its status. The site and pod are the resource's
 * (`wanas.site`, `wanas.pod`, set once per process).
 */
export async function inOperationSpan<T>(
  op: string,
  parent: Context,
  run: (traceparent: () => string | undefined) => T | Promise<T>,
  inCallSpan = false,
): Promise<T> {
  if (!tracer) return run(() => undefined);
  const span = inCallSpan
    ? trace.getSpan(parent)
    : tracer.startSpan(
        `operation ${op}`,
        { kind: SpanKind.INTERNAL, attributes: { 'wanas.operation': op } },
        parent,
      );
  if (!span?.isRecording()) return run(() => (span ? traceparentOf(span) : undefined)); // not sampled: no wrapper
  if (inCallSpan) span.setAttribute('wanas.operation', op);
  try {
    return await run(() => traceparentOf(span));
  } catch (e) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
    throw e;
  } finally {
    if (!inCallSpan) span.end(); // the call's span is ended by the server, with the call's status
  }
}

/** The W3C `traceparent` of a span as the propagator writes it (what an operation sends on to its backend). */
function traceparentOf(span: Span): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(trace.setSpan(ROOT_CONTEXT, span), carrier);
  return carrier.traceparent;
}

/**
 * Writes the span's `traceparent` (and `tracestate`) into `md`, as the W3C propagator formats them (also
 * once the span ended): how a caller learns which trace answered it. Nothing when tracing is off.
 */
export function injectTraceparent(span: Span, md: grpc.Metadata): void {
  if (tracer) propagation.inject(trace.setSpan(ROOT_CONTEXT, span), md, metadataSetter);
}

/** The trace and span ids for a log line (undefined when tracing is off). */
export function logIds(span: Span): { trace_id: string; span_id: string } | undefined {
  const sc = span.spanContext();
  return trace.isSpanContextValid(sc) ? { trace_id: sc.traceId, span_id: sc.spanId } : undefined;
}
