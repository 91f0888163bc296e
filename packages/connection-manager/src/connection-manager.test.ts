import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ConnectionManager, RTT_HEDGE_SLACK_MS } from './connection-manager';

const bytesMethod = (path: string) => ({
  path,
  requestStream: false,
  responseStream: false,
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
});
/** Methods of the test server: `Hang` never answers (a busy peer, as the caller sees it); `Slow` in 30 ms. */
const HANG = {
  hang: bytesMethod('/test.Busy/Hang'),
  slow: bytesMethod('/test.Busy/Slow'),
} satisfies grpc.ServiceDefinition;
const SLOW_MS = 30;

/** A real grpc-js server on 127.0.0.1 that answers grpc.health.v1 SERVING (and never answers `Hang`). */
async function healthServer(): Promise<{ address: string; health: HealthImplementation; stop(): void }> {
  const server = new grpc.Server();
  const health = new HealthImplementation({ '': 'SERVING' });
  health.addToServer(server);
  server.addService(HANG, {
    hang: () => undefined,
    slow: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) =>
      setTimeout(() => cb(null, Buffer.alloc(0)), SLOW_MS),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { address: `127.0.0.1:${port}`, health, stop: () => server.forceShutdown() };
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

  it('does not hold a deadline too short to judge by against a peer but checks its health (a stuck one goes down); a generous one that expires marks it failing', async () => {
    const peer = await healthServer();
    const cm = new ConnectionManager();
    const Busy = grpc.makeGenericClientConstructor(HANG, 'Busy');
    const client = new Busy(peer.address, grpc.credentials.createInsecure());
    const call = (path: string, timeoutMs: number) =>
      new Promise<void>((resolve, reject) =>
        client.makeUnaryRequest(
          path,
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
      // Its fastest usual answer: about 30 ms.
      for (let i = 0; i < 10; i++) await cm.track(ep, () => call(HANG.slow.path, 2000), 2000);
      const floor = cm.latencyFloorMs(ep)!;
      expect(floor).toBeGreaterThanOrEqual(SLOW_MS);
      // What was left of a caller's budget: under twice the fastest usual answer.
      const tight = Math.floor(floor * 1.5);
      await expect(cm.track(ep, () => call(HANG.hang.path, tight), tight)).rejects.toMatchObject({
        code: grpc.status.DEADLINE_EXCEEDED,
      });
      expect(cm.snapshot()[0]).toMatchObject({ state: 'ready' });
      // The same short budget on a peer that is stuck (it no longer answers SERVING): the health check that
      // follows finds it out.
      peer.health.setStatus('', 'NOT_SERVING');
      await expect(cm.track(ep, () => call(HANG.hang.path, tight), tight)).rejects.toMatchObject({
        code: grpc.status.DEADLINE_EXCEEDED,
      });
      for (let i = 0; i < 100 && cm.snapshot()[0]!.state !== 'down'; i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(cm.snapshot()[0]).toMatchObject({ state: 'down' });
      expect(cm.snapshot()[0]!.stateReason).toMatch(/short budget .* no SERVING health answer/);
      peer.health.setStatus('', 'SERVING');
      for (let i = 0; i < 200 && cm.snapshot()[0]!.state === 'down'; i++)
        await new Promise((r) => setTimeout(r, 20));
      await cm.track(ep, () => call(HANG.slow.path, 2000), 2000);
      expect(cm.snapshot()[0]).toMatchObject({ state: 'ready' });
      // A timeout many times the usual latency: the peer did not answer in time.
      const generous = Math.ceil(floor * 4);
      await expect(cm.track(ep, () => call(HANG.hang.path, generous), generous)).rejects.toMatchObject({
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
