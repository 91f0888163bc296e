/**
 * OpenTelemetry traces, configured the standard way: on when an OTLP endpoint is set
 * (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`),
 * off otherwise and with `OTEL_SDK_DISABLED=true` (then every call below is the API's no-op: nothing is
 * recorded, propagated or exported). `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` chooses `http/protobuf` (the
 * default) or `http/json`; `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER(_ARG)` and `OTEL_BSP_*` are read by
 * the SDK. A caller's W3C `traceparent`/`tracestate` is continued; without one a trace starts at the entry.
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
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { codeName } from '@wanas/proto';
import type { Logger } from 'winston';
import type { BrokerInfo } from './topology';

const TRACER = 'wanas';

/** True when the environment asks for traces (see the module comment). */
export function tracingWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.OTEL_SDK_DISABLED === 'true' || env.OTEL_TRACES_EXPORTER === 'none') return false;
  return !!(
    env.OTEL_EXPORTER_OTLP_ENDPOINT ||
    env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ||
    env.OTEL_TRACES_EXPORTER === 'otlp'
  );
}

/**
 * The process's tracer provider, once started. Several brokers in one process (`--id a,b,c`, benchmarks)
 * share it and its resource (the first one's id); it is shut down when the last of them stops.
 */
let provider: BasicTracerProvider | undefined;
let users = 0;
/** The span of every call while tracing is off (one shared non-recording span: nothing is made per call). */
export const OFF_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
const OFF_ATTEMPT = { done: () => undefined };
const OFF_CALL = { span: OFF_SPAN, ctx: ROOT_CONTEXT };

/** True once this process traces (spans are recorded and exported). */
export function tracingOn(): boolean {
  return provider !== undefined;
}

/**
 * Starts tracing for this process when the environment asks for it: the OTLP exporter of the protocol
 * asked, a batch span processor and W3C trace-context propagation. Parents are passed explicitly (a call's
 * context travels in its CallContext), not through an async-hooks context manager, whose hooks on every
 * promise would cost every call. Returns how to flush and stop.
 */
export async function startTracing(self: BrokerInfo, log: Logger): Promise<{ shutdown(): Promise<void> }> {
  if (!tracingWanted()) return { shutdown: async () => undefined };
  users++;
  const stop = async () => {
    if (--users === 0) await provider?.shutdown();
    else await provider?.forceFlush();
  };
  if (provider) return { shutdown: stop };
  const protocol =
    process.env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ??
    process.env.OTEL_EXPORTER_OTLP_PROTOCOL ??
    'http/protobuf';
  const exporter = await exporterFor(protocol);
  provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      'service.name': process.env.OTEL_SERVICE_NAME ?? 'wanas',
      'service.instance.id': self.id,
      'wanas.site': self.site,
      'wanas.pod': self.pod,
    }),
    spanProcessors: [new BatchSpanProcessor(exporter)],
  });
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  log.info('tracing on', {
    protocol,
    endpoint: process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? process.env.OTEL_EXPORTER_OTLP_ENDPOINT,
  });
  return { shutdown: stop };
}

/** The OTLP/HTTP exporter for `protocol` (its endpoint and headers from the standard variables). */
async function exporterFor(protocol: string): Promise<SpanExporter> {
  if (protocol === 'http/json') {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    return new OTLPTraceExporter();
  }
  if (protocol === 'http/protobuf') {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
    return new OTLPTraceExporter();
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
  if (!provider) return OFF_CALL;
  const parent = propagation.extract(ROOT_CONTEXT, md, metadataGetter);
  const span = trace
    .getTracer(TRACER)
    .startSpan(
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
 */
export function attemptSpan(
  parent: Context,
  md: grpc.Metadata,
  method: 'SiteRequest' | 'LocalRequest' | 'StreamSiteRequest',
  correlationId: string,
  endpoint: { brokerId: string; address: string },
  hedged: boolean,
): { done(code: number, message?: string): void } {
  if (!provider) return OFF_ATTEMPT;
  const span = trace.getTracer(TRACER).startSpan(
    `wanas.v1.FederationService/${method}`,
    {
      kind: SpanKind.CLIENT,
      attributes: {
        ...rpcAttributes('wanas.v1.FederationService', method, correlationId),
        'server.address': endpoint.address,
        'wanas.peer_broker': endpoint.brokerId,
        'wanas.hedged': hedged,
      },
    },
    parent,
  );
  if (span.isRecording()) propagation.inject(trace.setSpan(parent, span), md, metadataSetter);
  return { done: (code, message) => endSpan(span, code, message) };
}

/** Runs an operation in this pod under its own span (a child of the call's, `parent`). */
export async function inOperationSpan<T>(
  op: string,
  self: BrokerInfo,
  parent: Context,
  run: () => T | Promise<T>,
): Promise<T> {
  if (!provider) return run();
  const span = trace.getTracer(TRACER).startSpan(
    `operation ${op}`,
    {
      kind: SpanKind.INTERNAL,
      attributes: { 'wanas.operation': op, 'wanas.site': self.site, 'wanas.pod': self.pod },
    },
    parent,
  );
  try {
    return await run();
  } catch (e) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
    throw e;
  } finally {
    span.end();
  }
}

/**
 * Writes the span's `traceparent` (and `tracestate`) into `md`, as the W3C propagator formats them (also
 * once the span ended): how a caller learns which trace answered it. Nothing when tracing is off.
 */
export function injectTraceparent(span: Span, md: grpc.Metadata): void {
  if (provider) propagation.inject(trace.setSpan(ROOT_CONTEXT, span), md, metadataSetter);
}

/** The trace and span ids for a log line (undefined when tracing is off). */
export function logIds(span: Span): { trace_id: string; span_id: string } | undefined {
  const sc = span.spanContext();
  return trace.isSpanContextValid(sc) ? { trace_id: sc.traceId, span_id: sc.spanId } : undefined;
}
