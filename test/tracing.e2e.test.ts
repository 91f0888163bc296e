/**
 * OpenTelemetry traces end to end: brokers configured by the standard OTEL_* variables export over
 * OTLP/HTTP (http/json) to a real HTTP receiver in this test; one Aggregate across three sites, sent with a
 * caller's `traceparent`, yields one trace: the entry's server span (child of the caller's), an attempt
 * span per fan-out request, each peer's server span a child of the attempt that reached it, and the
 * operation in every pod (its own span at the entry and the representatives; a LocalRequest's server span
 * is its operation's). The answer's trailer carries the entry span's `traceparent`; log lines
 * carry `trace_id` and `span_id`. A frozen or missing collector costs the brokers neither answers nor a
 * clean, prompt exit.
 */
import * as grpc from '@grpc/grpc-js';
import { AggregateRequest, AggregationServiceClient, Hedging, type AggregateResponse } from '@wanas/proto';
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import { DevFederation, freePorts } from '@wanas/devfed';
import { until } from './support/until';

jest.setTimeout(90_000);

/** One span as the receiver keeps it. */
interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  broker: string;
  attributes: Record<string, unknown>;
  /** OTLP's status code (0 unset, 1 ok, 2 error) and message. */
  status: { code: number; message: string };
  /** The resource's service.name. */
  service: string;
}

/** OTLP/JSON ids are hex; some exporters send base64: both are read as hex. */
const hex = (id: string | undefined) =>
  !id ? '' : /^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, 'base64').toString('hex');

/** A real OTLP/HTTP trace receiver on 127.0.0.1 (POST /v1/traces, JSON). */
async function otlpReceiver(): Promise<{
  url: string;
  spans: ReceivedSpan[];
  /** Protobuf bodies (http/protobuf), kept as they came. */
  protobuf: Buffer[];
  close(): Promise<void>;
}> {
  const spans: ReceivedSpan[] = [];
  const protobuf: Buffer[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/v1/traces' && req.headers['content-type'] === 'application/x-protobuf') {
        protobuf.push(Buffer.concat(chunks));
      } else if (req.url === '/v1/traces' && req.method === 'POST') {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as OtlpBody;
        for (const rs of body.resourceSpans ?? []) {
          const broker = attr(rs.resource?.attributes, 'service.instance.id');
          const service = attr(rs.resource?.attributes, 'service.name');
          for (const ss of rs.scopeSpans ?? [])
            for (const s of ss.spans ?? [])
              spans.push({
                traceId: hex(s.traceId),
                spanId: hex(s.spanId),
                parentSpanId: hex(s.parentSpanId),
                name: s.name,
                kind: s.kind,
                broker: String(broker),
                service: String(service),
                attributes: Object.fromEntries((s.attributes ?? []).map((a) => [a.key, valueOf(a.value)])),
                status: { code: s.status?.code ?? 0, message: s.status?.message ?? '' },
              });
        }
      }
      res.setHeader('content-type', 'application/json');
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    spans,
    protobuf,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

interface OtlpValue {
  stringValue?: string;
  intValue?: number | string;
  boolValue?: boolean;
}
interface OtlpBody {
  resourceSpans?: {
    resource?: { attributes?: { key: string; value: OtlpValue }[] };
    scopeSpans?: {
      spans?: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind: number;
        attributes?: { key: string; value: OtlpValue }[];
        status?: { code?: number; message?: string };
      }[];
    }[];
  }[];
}
const valueOf = (v: OtlpValue) =>
  v.stringValue ?? v.boolValue ?? (v.intValue !== undefined ? Number(v.intValue) : undefined);
const attr = (attrs: { key: string; value: OtlpValue }[] | undefined, key: string) =>
  valueOf(attrs?.find((a) => a.key === key)?.value ?? {});

describe('OpenTelemetry traces through every hop (real processes, a real OTLP/HTTP receiver)', () => {
  let receiver: Awaited<ReturnType<typeof otlpReceiver>>;
  let f: DevFederation;

  beforeAll(async () => {
    receiver = await otlpReceiver();
    f = await DevFederation.start({
      spec: { s1: { p1: 1, p2: 1 }, s2: { p1: 1, p2: 1 }, s3: { p1: 1 } },
      wanLatencyMs: 5,
      logLevel: 'info',
      envFor: () => ({
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_SERVICE_NAME: 'wanas-test',
        OTEL_BSP_SCHEDULE_DELAY: '100',
      }),
    });
  });

  afterAll(async () => {
    await f?.stop();
    await receiver?.close();
  });

  it("continues the caller's traceparent across three sites: every hop's spans, parented hop by hop", async () => {
    const traceId = randomBytes(16).toString('hex');
    const callerSpan = randomBytes(8).toString('hex');
    const client = f.track(new AggregationServiceClient(f.broker('s1-p1-a').address, f.clientCredentials));
    const md = new grpc.Metadata();
    md.set('traceparent', `00-${traceId}-${callerSpan}-01`);
    let trailers: grpc.Metadata | undefined;
    const res = await new Promise<AggregateResponse>((resolve, reject) => {
      const call = client.aggregate(
        // No hedging: a hedged SiteRequest (its representative slow to acknowledge on a loaded machine)
        // would rightly run a site's pods twice, and this test counts each pod's operation once.
        AggregateRequest.fromPartial({
          operation: 'echo',
          params: { hello: 'trace' },
          hedging: Hedging.HEDGING_OFF,
        }),
        md,
        { deadline: Date.now() + 10_000 },
        (e, r) => (e ? reject(e) : resolve(r!)),
      );
      call.on('status', (s: grpc.StatusObject) => (trailers = s.metadata));
    });
    expect(res.summary?.podsOk).toBe(5);

    const inTrace = () => receiver.spans.filter((s) => s.traceId === traceId);
    const named = (name: string) => inTrace().filter((s) => s.name === name);
    await until(
      'every hop exported its spans',
      async () =>
        named('wanas.v1.AggregationService/Aggregate').length === 1 &&
        named('wanas.v1.FederationService/SiteRequest').filter((s) => s.kind === 2).length >= 2 &&
        named('wanas.v1.FederationService/LocalRequest').filter((s) => s.kind === 2).length >= 2 &&
        named('operation echo').length >= 3,
      20_000,
    );
    const spans = inTrace();
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    // The entry continues the caller's span (SERVER = 2, CLIENT = 3 in OTLP).
    const entry = named('wanas.v1.AggregationService/Aggregate')[0]!;
    expect(entry).toMatchObject({ parentSpanId: callerSpan, kind: 2, broker: 's1-p1-a' });
    expect(entry.attributes).toMatchObject({ 'rpc.system': 'grpc', 'rpc.method': 'Aggregate' });
    expect(entry.attributes['wanas.correlation_id']).toBe(res.correlationId);
    // Each representative's SiteRequest span is the child of an entry attempt span, which is the entry's child.
    for (const server of named('wanas.v1.FederationService/SiteRequest').filter((s) => s.kind === 2)) {
      const attempt = byId.get(server.parentSpanId)!;
      expect(attempt).toMatchObject({ kind: 3, broker: 's1-p1-a', parentSpanId: entry.spanId });
      expect(attempt.attributes['wanas.peer_broker']).toBe(server.broker);
      expect(typeof attempt.attributes['wanas.hedged']).toBe('boolean');
    }
    expect(
      new Set(
        named('wanas.v1.FederationService/SiteRequest')
          .filter((s) => s.kind === 2)
          .map((s) => s.broker.slice(0, 2)),
      ),
    ).toEqual(new Set(['s2', 's3']));
    // LocalRequests: from the entry to s1/p2, and from s2's representative to its other pod.
    const localServers = named('wanas.v1.FederationService/LocalRequest').filter((s) => s.kind === 2);
    expect(localServers.map((s) => s.broker).sort()).toEqual(expect.arrayContaining(['s1-p2-a']));
    for (const server of localServers) {
      const attempt = byId.get(server.parentSpanId)!;
      expect(attempt.kind).toBe(3);
      const caller = byId.get(attempt.parentSpanId)!;
      expect(caller.kind).toBe(2);
      expect(caller.broker.slice(0, 2)).toBe(server.broker.slice(0, 2)); // a LocalRequest stays in its site
    }
    // The operation ran once per pod: under its own span, a child of the server span of the broker that
    // ran it, where that call also fanned out; as the LocalRequest's server span where it did nothing else.
    const ops = named('operation echo');
    for (const op of ops) expect(byId.get(op.parentSpanId)).toMatchObject({ kind: 2, broker: op.broker });
    for (const server of localServers) expect(server.attributes['wanas.operation']).toBe('echo');
    expect([...ops, ...localServers].map((s) => s.broker).sort()).toEqual(f.brokers.map((b) => b.id).sort());

    // The answer says which trace it was: the entry span's traceparent in the trailer.
    expect(trailers?.get('traceparent')[0]).toBe(`00-${traceId}-${entry.spanId}-01`);
    // And the log lines carry the trace and span ids beside the correlation id.
    await until('the entry logged the call', async () =>
      f.logs('s1-p1-a').some((l) => l.correlationId === res.correlationId && l.message === 'served'),
    );
    const line = f
      .logs('s1-p1-a')
      .find((l) => l.correlationId === res.correlationId && l.message === 'served')!;
    expect(line).toMatchObject({ trace_id: traceId, span_id: entry.spanId });
  });

  it("honours a caller's decision not to sample at every hop (no broker records a span of that aggregate)", async () => {
    const ask = (flags: string) => {
      const client = f.track(new AggregationServiceClient(f.broker('s1-p1-a').address, f.clientCredentials));
      const md = new grpc.Metadata();
      md.set(
        'traceparent',
        `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-${flags}`,
      );
      return new Promise<AggregateResponse>((resolve, reject) =>
        client.aggregate(
          AggregateRequest.fromPartial({ operation: 'echo' }),
          md,
          { deadline: Date.now() + 10_000 },
          (e, r) => (e ? reject(e) : resolve(r!)),
        ),
      );
    };
    const servedFor = (correlationId: string) =>
      receiver.spans.filter((s) => s.kind === 2 && s.attributes['wanas.correlation_id'] === correlationId);
    const unsampled = await ask('00');
    const sampled = await ask('01');
    // Once every hop of the sampled one is exported, anything of the unsampled one would have been too.
    await until(
      'the sampled aggregate exported by every hop',
      async () => servedFor(sampled.correlationId).length >= 5,
      20_000,
    );
    expect(servedFor(unsampled.correlationId)).toEqual([]);
    expect(
      receiver.spans.filter((s) => s.attributes['wanas.correlation_id'] === unsampled.correlationId),
    ).toEqual([]);
  });

  it("marks the LocalRequest's server span with the operation's error when the operation fails in its pod", async () => {
    // s1/p2 is asked to sleep past its deadline: it answers DEADLINE_EXCEEDED in the pod's result. (The
    // entry always reaches it by a LocalRequest; a remote site's pod may be that site's representative.)
    const r = await f.aggregator('s1-p1-a')({
      operation: 'echo',
      params: { sleepMs: 20_000, sleepPod: 's1/p2' },
      timeout: { seconds: 1, nanos: 0 },
    });
    expect(r.pods.find((p) => p.site === 's1' && p.pod === 'p2')?.code).not.toBe(grpc.status.OK);
    const served = () =>
      receiver.spans.find(
        (s) =>
          s.kind === 2 &&
          s.broker === 's1-p2-a' &&
          s.name === 'wanas.v1.FederationService/LocalRequest' &&
          s.attributes['wanas.correlation_id'] === r.correlationId,
      );
    await until('s1/p2 exported its LocalRequest span', async () => served() !== undefined, 20_000);
    expect(served()).toMatchObject({ attributes: { 'wanas.operation': 'echo' }, status: { code: 2 } });
    expect(served()!.status.message).toMatch(/sleep|cancel/i);
  });

  it('starts a trace at the entry for a caller that sent none', async () => {
    const before = receiver.spans.length;
    const r = await f.aggregator('s1-p1-a')({ operation: 'echo' });
    await until(
      'the new trace exported',
      async () =>
        receiver.spans
          .slice(before)
          .some(
            (s) =>
              s.name === 'wanas.v1.AggregationService/Aggregate' &&
              s.attributes['wanas.correlation_id'] === r.correlationId,
          ),
      20_000,
    );
    const root = receiver.spans
      .slice(before)
      .find(
        (s) =>
          s.name === 'wanas.v1.AggregationService/Aggregate' &&
          s.attributes['wanas.correlation_id'] === r.correlationId,
      )!;
    expect(root.parentSpanId).toBe('');
  });

  it("ends every hop's spans CANCELLED when the caller cancels (pods asked to sleep 4 s)", async () => {
    const correlationId = `trace-cancel-${Date.now()}`;
    await f.cancelledAggregate('s1-p1-a', correlationId, 500);
    const servers = () =>
      receiver.spans.filter((s) => s.kind === 2 && s.attributes['wanas.correlation_id'] === correlationId);
    // Every hop: the entry, both representatives, the LocalRequests to s1/p2 and s2/p2 (spans are exported
    // once ended, well before the 4 s the pods were asked to sleep).
    await until('every hop ended its span', async () => servers().length >= 5, 3500);
    const ended = servers().map((s) => [
      s.broker,
      s.name.split('/')[1],
      s.attributes['rpc.grpc.status_code'],
    ]);
    expect(ended).toEqual(expect.arrayContaining([['s1-p1-a', 'Aggregate', grpc.status.CANCELLED]]));
    for (const [broker, , code] of ended)
      expect({ broker, code }).toEqual({ broker, code: grpc.status.CANCELLED });
    expect(new Set(ended.map(([broker]) => String(broker).slice(0, 2)))).toEqual(new Set(['s1', 's2', 's3']));
  });

  it('exports over http/protobuf too (the default protocol)', async () => {
    const one = await DevFederation.start({
      spec: { s9: { p1: 1 } },
      wanLatencyMs: 0,
      envFor: () => ({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '100' }),
    });
    try {
      const r = await one.aggregator('s9-p1-a')({ operation: 'echo' });
      await until(
        'a protobuf export holding the call',
        async () => receiver.protobuf.some((b) => b.includes(Buffer.from(r.correlationId))),
        20_000,
      );
    } finally {
      await one.stop();
    }
  });

  it("traces with the topology's tracing section alone (no OTEL_* variables)", async () => {
    const fed = await DevFederation.start({
      spec: { s8: { p1: 1 }, s9: { p1: 1 } },
      wanLatencyMs: 0,
      tracing: { endpoint: receiver.url, protocol: 'http/json', serviceName: 'from-topology' },
      envFor: () => ({ OTEL_BSP_SCHEDULE_DELAY: '100' }),
    });
    try {
      const r = await fed.aggregator('s8-p1-a')({ operation: 'echo' });
      const mine = () =>
        receiver.spans.filter(
          (s) => s.kind === 2 && s.attributes['wanas.correlation_id'] === r.correlationId,
        );
      // Both sites' brokers: the entry's Aggregate and the SiteRequest served in s9.
      await until('both brokers exported their spans', async () => mine().length >= 2, 20_000);
      expect(new Set(mine().map((s) => s.broker))).toEqual(new Set(['s8-p1-a', 's9-p1-a']));
      expect(new Set(mine().map((s) => s.service))).toEqual(new Set(['from-topology']));
    } finally {
      await fed.stop();
    }
  });
});

describe('tracing with a collector that fails (real processes across the emulated WAN)', () => {
  it('keeps answering, and stops within its grace, when the collector is frozen or gone', async () => {
    // A frozen collector: takes connections and never answers. A gone one: a port nothing listens on.
    const frozen = net.createServer(() => undefined);
    await new Promise<void>((r) => frozen.listen(0, '127.0.0.1', r));
    const [gone] = await freePorts(1);
    const collectors = [
      `http://127.0.0.1:${(frozen.address() as net.AddressInfo).port}`,
      `http://127.0.0.1:${gone}`,
    ];
    const feds = await Promise.all(
      collectors.map((endpoint) =>
        DevFederation.start({
          spec: { s1: { p1: 1, p2: 1 }, s2: { p1: 1 } },
          wanLatencyMs: 5,
          tracing: { endpoint },
          envFor: () => ({ OTEL_BSP_SCHEDULE_DELAY: '50' }),
        }),
      ),
    );
    try {
      for (const fed of feds) {
        for (let i = 0; i < 30; i++) {
          const r = await fed.aggregator('s1-p1-a')({ operation: 'echo' });
          expect(r.summary?.podsOk).toBe(3);
        }
        // SIGTERM: the broker drains and exits by itself (code 0), not by the harness's SIGKILL, though
        // its last spans cannot be delivered.
        const proc = fed.broker('s1-p1-a').proc!;
        const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
        const t0 = Date.now();
        proc.kill('SIGTERM');
        expect(await exited).toBe(0);
        expect(Date.now() - t0).toBeLessThan(4000);
      }
    } finally {
      await Promise.all(feds.map((fed) => fed.stop()));
      frozen.close();
    }
  });
});
