/**
 * The `tracing` part: what OpenTelemetry tracing at 100% sampling costs (issue 16's target: ≤ 5% CPU per
 * aggregate). Two federations of the latency part's shape run side by side, one exporting every span over
 * OTLP http/protobuf to a sink in this process, the other with tracing off; aggregates go to one and the
 * other in turn, so the machine's drift falls on both alike. Each round gives a ratio of CPU per aggregate
 * (every broker, from /proc, idle included in both); the figure is the median of those ratios. Run it with
 * `npm run bench -- tracing`.
 */
import * as http from 'node:http';
import * as protobuf from 'protobufjs';
import { DevFederation } from '@wanas/devfed';
import { processCpuMs } from './part-cpu';
import { shape, timed, type BenchCounts, type Progress } from './parts';
import { median, summarize } from './stats';

/** JSON of the tracing part. */
export interface TracingResult {
  part: 'tracing';
  /** The traced federation's sampler (always_on unless OTEL_TRACES_SAMPLER is set for the run). */
  sampler: string;
  /** Its OTLP encoding (http/protobuf unless OTEL_EXPORTER_OTLP_PROTOCOL is set for the run). */
  protocol: string;
  /** CPU of every broker per aggregate, ms: medians over the rounds. */
  offMs: number;
  onMs: number;
  /** The median of the rounds' on ÷ off ratios, and their range. */
  ratio: number;
  minRatio: number;
  maxRatio: number;
  /** p50 latency of an aggregate, ms, over every round. */
  offP50Ms: number;
  onP50Ms: number;
  rounds: number;
  aggregates: number;
  /** Spans received by the sink per aggregate (every broker's, warm-up included), and export requests. */
  spansPerAggregate: number;
  exports: number;
}

const ENTRY = 's1-p1-a';
const ECHO = { operation: 'echo', params: { payload: 'x'.repeat(200) } };

/** Just enough of OTLP's ExportTraceServiceRequest to count its spans (other fields are skipped). */
const ExportRequest = protobuf.Root.fromJSON({
  nested: {
    Req: { fields: { resourceSpans: { rule: 'repeated', type: 'Rs', id: 1 } } },
    Rs: { fields: { scopeSpans: { rule: 'repeated', type: 'Ss', id: 2 } } },
    Ss: { fields: { spans: { rule: 'repeated', type: 'Span', id: 2 } } },
    Span: { fields: { spanId: { type: 'bytes', id: 2 } } },
  },
}).lookupType('Req');

/** The number of spans in an OTLP/HTTP export body (protobuf, or JSON when `json`). */
function spansIn(body: Buffer, json: boolean): number {
  const req = (json ? JSON.parse(body.toString()) : ExportRequest.decode(body)) as {
    resourceSpans?: { scopeSpans?: { spans?: unknown[] }[] }[];
  };
  return (req.resourceSpans ?? []).reduce(
    (n, rs) => n + (rs.scopeSpans ?? []).reduce((m, ss) => m + (ss.spans ?? []).length, 0),
    0,
  );
}

/** A sink for OTLP/HTTP exports: counts requests and spans. */
async function otlpSink() {
  const seen = { exports: 0, spans: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const json = req.headers['content-type'] === 'application/json';
      seen.exports++;
      seen.spans += spansIn(Buffer.concat(chunks), json);
      if (json) res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      else res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return { seen, endpoint, close: () => new Promise((r) => server.close(r)) };
}

/** Runs the tracing part. */
export async function tracingPart(counts: BenchCounts, progress: Progress): Promise<TracingResult> {
  const sink = await otlpSink();
  const shapeOf = shape(counts, 4, 3, 2);
  const start = (env?: Record<string, string>) =>
    DevFederation.start({ ...shapeOf, wanLatencyMs: 0, logLevel: 'info', envFor: env && (() => env) });
  // Every broker inherits this process's environment: OTEL_BSP_*, OTEL_TRACES_SAMPLER or
  // OTEL_EXPORTER_OTLP_PROTOCOL set for a run (`OTEL_TRACES_SAMPLER=always_off npm run bench -- tracing`)
  // apply to the traced federation; the other is told OTEL_SDK_DISABLED.
  const sampler = process.env.OTEL_TRACES_SAMPLER ?? 'always_on';
  const protocol = process.env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf';
  const off = await start({ OTEL_SDK_DISABLED: 'true' });
  const on = await start({
    OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
    OTEL_TRACES_SAMPLER: sampler,
  });
  let onStopped = false;
  try {
    const warm = counts.smoke ? 5 : 200;
    const ask = { off: off.aggregator(ENTRY), on: on.aggregator(ENTRY) };
    for (const name of ['off', 'on'] as const)
      await timed(warm, progress, `tracing ${name}: warm-up`, () => ask[name](ECHO));
    const rounds = counts.smoke ? 2 : 6;
    const aggregates = counts.smoke ? 10 : Math.max(200, Math.round(counts.requests / 3));
    const cpu = (f: DevFederation) => f.brokers.reduce((n, b) => n + processCpuMs(b.proc?.pid), 0);
    const ms = { off: [] as number[], on: [] as number[] };
    const lat = { off: [] as number[], on: [] as number[] };
    for (let i = 0; i < rounds; i++) {
      const before = { off: cpu(off), on: cpu(on) };
      // One aggregate to each in turn (off-on, on-off, …): both federations live through the same
      // moments of the machine, and a round spans several of the exporter's 5 s batches.
      progress.start(`tracing: round ${i + 1}`, aggregates);
      for (let j = 0; j < aggregates; j++) {
        for (const name of j % 2 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
          const t0 = performance.now();
          await ask[name](ECHO);
          lat[name].push(performance.now() - t0);
        }
        progress.tick();
      }
      ms.off.push((cpu(off) - before.off) / aggregates);
      ms.on.push((cpu(on) - before.on) / aggregates);
    }
    await on.stop(); // flushes every broker's spans before they are counted
    onStopped = true;
    const ratios = ms.on.map((x, i) => x / ms.off[i]!);
    return {
      part: 'tracing',
      sampler,
      protocol,
      offMs: median(ms.off),
      onMs: median(ms.on),
      ratio: median(ratios),
      minRatio: Math.min(...ratios),
      maxRatio: Math.max(...ratios),
      offP50Ms: summarize(lat.off).p50Ms,
      onP50Ms: summarize(lat.on).p50Ms,
      rounds,
      aggregates,
      spansPerAggregate: sink.seen.spans / (warm + rounds * aggregates),
      exports: sink.seen.exports,
    };
  } finally {
    await Promise.all([off.stop(), onStopped || on.stop()]);
    await sink.close();
  }
}

/** Human lines for the tracing part's result. */
export function describeTracing(r: TracingResult): string {
  return [
    `  tracing, sampler ${r.sampler}${r.sampler === 'always_on' ? ' (100%)' : ''} (OTLP ${r.protocol}, ${r.spansPerAggregate.toFixed(1)} spans per aggregate, ${r.exports} exports): ${r.onMs.toFixed(2)} ms of broker CPU per aggregate vs ${r.offMs.toFixed(2)} ms off`,
    `  on ÷ off = ${r.ratio.toFixed(3)}× (median of ${r.rounds} rounds of ${r.aggregates}, each ${r.minRatio.toFixed(3)}–${r.maxRatio.toFixed(3)}×; target ≤ 1.05×); p50 ${r.onP50Ms.toFixed(1)} ms on, ${r.offP50Ms.toFixed(1)} ms off`,
  ].join('\n');
}
