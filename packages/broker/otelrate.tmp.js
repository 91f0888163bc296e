const { trace, SpanKind, ROOT_CONTEXT, propagation } = require('@opentelemetry/api');
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const http = require('http');
const noexport = process.argv[2] === 'noexport';
const sink = http.createServer((req, res) => { req.resume(); req.on('end', () => res.end()); });
sink.listen(0, '127.0.0.1', async () => {
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
  const exp = noexport ? { export: (s, cb) => cb({ code: 0 }), shutdown: async () => {}, forceFlush: async () => {} } : new OTLPTraceExporter({ url: `http://127.0.0.1:${sink.address().port}/v1/traces` });
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'x' }), spanProcessors: [new BatchSpanProcessor(exp)] });
  trace.setGlobalTracerProvider(provider);
  const tr = trace.getTracer('wanas');
  const junk = [];
  const burst = () => { for (let i = 0; i < 3; i++) {
    const s = tr.startSpan('wanas.v1.FederationService/SiteRequest', { kind: SpanKind.CLIENT, attributes: {
      'rpc.system': 'grpc', 'rpc.service': 'wanas.v1.FederationService', 'rpc.method': 'SiteRequest', 'wanas.correlation_id': 'abcdef0123456789', 'server.address': '127.0.0.1:1234', 'wanas.peer_broker': 'east-pod-1-a', 'wanas.hedged': false } }, ROOT_CONTEXT);
    s.setAttribute('rpc.grpc.status_code', 0); s.end();
  }
  // other work between spans: allocate garbage like a request would
  for (let i = 0; i < 2000; i++) junk[i % 100] = { a: i, b: 'x' + i, c: [i, i + 1] };
  };
  const c0 = process.cpuUsage(); let n = 0; const t0 = Date.now();
  await new Promise((done) => { const tick = () => { burst(); n += 3; if (Date.now() - t0 < 15000) setTimeout(tick, 2); else done(); }; tick(); });
  await provider.forceFlush();
  const c = process.cpuUsage(c0);
  console.log(noexport ? 'noexport' : 'export', n, 'spans; cpu µs per span (incl junk work)', ((c.user + c.system) / n).toFixed(1));
  await provider.shutdown(); sink.close();
});
