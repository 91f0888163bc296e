import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ConnectionManager, RTT_HEDGE_SLACK_MS } from './connection-manager';

/** A method the test server accepts and never answers (a busy peer, as the caller sees it). */
const HANG = {
  hang: {
    path: '/test.Busy/Hang',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
} satisfies grpc.ServiceDefinition;

/** A real grpc-js server on 127.0.0.1 that answers grpc.health.v1 SERVING (and never answers `Hang`). */
async function healthServer(): Promise<{ address: string; stop(): void }> {
  const server = new grpc.Server();
  new HealthImplementation({ '': 'SERVING' }).addToServer(server);
  server.addService(HANG, { hang: () => undefined });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { address: `127.0.0.1:${port}`, stop: () => server.forceShutdown() };
}

describe('ConnectionManager against a real grpc-js server', () => {
  it('knows a hedge delay before the first request: from the round trip measured when the channel connected', async () => {
    const peer = await healthServer();
    const cm = new ConnectionManager();
    try {
      const ep = { brokerId: 'b', address: peer.address };
      cm.setPeers([{ site: 's2', pod: '', endpoints: [{ ...ep, site: 's2', pod: '' }] }]);
      expect(await cm.waitForWarm(5000)).toBe(true);
      let delay: number | undefined;
      for (let i = 0; i < 100 && delay === undefined; i++) {
        delay = cm.latencyP95Ms(ep);
        if (delay === undefined) await new Promise((r) => setTimeout(r, 20));
      }
      // Twice the round trip plus the slack, known with no call made yet.
      expect(delay).toBeGreaterThanOrEqual(RTT_HEDGE_SLACK_MS);
      expect(cm.snapshot()[0]).toMatchObject({ calls: 0 });
    } finally {
      cm.close();
      peer.stop();
    }
  });

  it('does not hold a deadline too short to judge by against a peer; a generous one that expires marks it failing', async () => {
    const peer = await healthServer();
    const cm = new ConnectionManager();
    const Busy = grpc.makeGenericClientConstructor(HANG, 'Busy');
    const client = new Busy(peer.address, grpc.credentials.createInsecure());
    const hang = (timeoutMs: number) =>
      new Promise<void>((resolve, reject) =>
        client.makeUnaryRequest(
          HANG.hang.path,
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          { deadline: Date.now() + timeoutMs },
          (err) => (err ? reject(err) : resolve()),
        ),
      );
    try {
      const ep = { brokerId: 'b', address: peer.address };
      cm.setPeers([{ site: 's2', pod: '', endpoints: [{ ...ep, site: 's2', pod: '' }] }]);
      expect(await cm.waitForWarm(5000)).toBe(true);
      for (let i = 0; i < 100 && cm.latencyP95Ms(ep) === undefined; i++)
        await new Promise((r) => setTimeout(r, 20));
      const usual = cm.latencyP95Ms(ep)!;
      // What was left of a caller's budget: a few ms, under twice the usual p95.
      const tight = Math.max(1, Math.floor(usual / 2));
      await expect(cm.track(ep, () => hang(tight), tight)).rejects.toMatchObject({
        code: grpc.status.DEADLINE_EXCEEDED,
      });
      expect(cm.snapshot()[0]).toMatchObject({ state: 'ready' });
      // A timeout many times the usual latency: the peer did not answer in time.
      const generous = Math.ceil(usual * 4);
      await expect(cm.track(ep, () => hang(generous), generous)).rejects.toMatchObject({
        code: grpc.status.DEADLINE_EXCEEDED,
      });
      expect(cm.snapshot()[0]).toMatchObject({ state: 'failing' });
    } finally {
      client.close();
      cm.close();
      peer.stop();
    }
  });
});
