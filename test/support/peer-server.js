'use strict';
/**
 * A real grpc-js peer broker for tests: serves wanas.v1.FederationService and grpc.health.v1 on
 * 127.0.0.1, with a behaviour that can be changed at run time, and counts the TCP connections it accepts.
 * In-process: `await startPeer({ id, behaviour })`. As a child process:
 * `node test/support/peer-server.js ID [PORT]` prints `LISTENING <port>` and serves until killed.
 */
const grpc = require('@grpc/grpc-js');
const net = require('node:net');
const { HealthImplementation } = require('grpc-health-check');
const { FederationServiceService } = require('@wanas/proto');

/**
 * `ack`: send the response headers at once, before the (delayed) answer, as a representative does.
 * @typedef {{ kind: 'ok' | 'unavailable' | 'hang' | 'invalid', delayMs?: number, slowEvery?: number, slowMs?: number, ack?: boolean }} Behaviour
 */

/** @param {{ id: string, behaviour?: Behaviour, port?: number }} opts */
async function startPeer(opts) {
  /** @type {Behaviour} */
  let behaviour = opts.behaviour ?? { kind: 'ok' };
  let calls = 0;
  let connections = 0;
  const sockets = new Set();
  const hung = new Set();
  const server = new grpc.Server();
  const health = new HealthImplementation({ '': 'SERVING' });
  health.addToServer(server);

  const answer = (call, cb, shape) => {
    calls++;
    const b = behaviour;
    const slow = b.slowEvery && calls % b.slowEvery === 0 ? (b.slowMs ?? 0) : 0;
    const delay = (b.delayMs ?? 0) + slow;
    if (b.ack) call.sendMetadata(new grpc.Metadata());
    const respond = () => {
      if (b.kind === 'hang') {
        hung.add(cb);
        return;
      }
      if (b.kind === 'unavailable')
        return cb({ code: grpc.status.UNAVAILABLE, details: `${opts.id} is unavailable` });
      if (b.kind === 'invalid')
        return cb({ code: grpc.status.INVALID_ARGUMENT, details: 'params.user: required' });
      cb(null, shape(call.request));
    };
    if (delay > 0) setTimeout(respond, delay);
    else respond();
  };
  const pod = (req) => ({
    site: req.target?.site ?? '',
    pod: req.target?.pod ?? '',
    code: 0,
    message: '',
    result: { echo: req.params ?? {}, broker: opts.id },
    answeredBy: opts.id,
    attempts: [],
    latency: undefined,
  });
  server.addService(FederationServiceService, {
    localRequest: (call, cb) =>
      answer(call, cb, (req) => ({ correlationId: req.correlationId, pod: pod(req) })),
    // A representative of an older version: SiteRequest only (no StreamSiteRequest), `first` unknown to
    // it, so it answers for every pod asked (pod-1 when none is named).
    siteRequest: (call, cb) =>
      answer(call, cb, (req) => ({
        correlationId: req.correlationId,
        answeredBy: opts.id,
        pods: (req.pods?.length ? req.pods : ['pod-1']).map((name) => ({ ...pod(req), pod: name })),
      })),
  });

  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const listener = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    injector.injectConnection(socket);
  });
  await new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  const port = listener.address().port;
  return {
    id: opts.id,
    port,
    address: `127.0.0.1:${port}`,
    /** @param {Behaviour} b */
    setBehaviour(b) {
      behaviour = b;
    },
    setServing(serving) {
      health.setStatus('', serving ? 'SERVING' : 'NOT_SERVING');
    },
    calls: () => calls,
    connections: () => connections,
    openConnections: () => sockets.size,
    async stop() {
      for (const cb of hung) cb({ code: grpc.status.UNAVAILABLE, details: 'stopping' });
      hung.clear();
      listener.close();
      for (const s of sockets) s.destroy();
      injector.destroy?.();
      server.forceShutdown();
    },
  };
}

module.exports = { startPeer };

if (require.main === module) {
  const [id = 'peer', port = '0'] = process.argv.slice(2);
  startPeer({ id, port: Number(port) }).then(
    (p) => console.log(`LISTENING ${p.port}`),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
