import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ConnectionManager, RTT_HEDGE_SLACK_MS } from './connection-manager';

/** A real grpc-js server on 127.0.0.1 that answers grpc.health.v1 SERVING. */
async function healthServer(): Promise<{ address: string; stop(): void }> {
  const server = new grpc.Server();
  new HealthImplementation({ '': 'SERVING' }).addToServer(server);
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
});
