/**
 * mTLS and authorization with real broker processes: brokers talk mTLS to each other; clients need a
 * certificate or a bearer token; only brokers of the topology may call FederationService; replaced
 * certificates are picked up without a restart; secrets never reach a log line.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceClient,
  AggregateRequest,
  AggregationServiceClient,
  FederationServiceClient,
  LocalRequest,
  SiteRequest,
  type AggregateResponse,
} from '@wanas/proto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { hashToken } from '@wanas/topology';
import { createTlsDir, reissueCertificate } from '@wanas/devfed';
import { Federation } from './support/federation';

const TOKEN = 'test-token-0123456789abcdef-not-a-real-secret';

describe('mTLS federation (real processes)', () => {
  let f: Federation;
  let certs: string;
  const read = (name: string) => fs.readFileSync(path.join(certs, name));

  beforeAll(async () => {
    f = await Federation.start(
      { east: { 'pod-1': 2, 'pod-2': 1 }, west: { 'pod-1': 1 } },
      {},
      async (dir, ids) => {
        certs = path.join(dir, 'certs');
        const files = await createTlsDir(certs, ids);
        return {
          security: {
            mode: 'mtls',
            caFile: files.ca,
            certFile: files.brokerCert,
            keyFile: files.brokerKey,
            refreshIntervalMs: 200,
            clientTokens: [{ name: 'ops', sha256: hashToken(TOKEN) }],
          },
          credentials: grpc.credentials.createSsl(read('ca.crt'), read('client.key'), read('client.crt')),
        };
      },
    );
  }, 60_000);
  afterAll(async () => {
    await f?.stop();
  });

  const entry = () => f.brokers.get('east-pod-1-a')!.address;
  function aggregateWith(creds: grpc.ChannelCredentials): Promise<AggregateResponse> {
    const client = new AggregationServiceClient(entry(), creds);
    const req = AggregateRequest.fromPartial({ operation: 'echo', timeout: { seconds: 3, nanos: 0 } });
    return new Promise<AggregateResponse>((resolve, reject) =>
      client.aggregate(req, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, r) => {
        client.close();
        return e ? reject(e) : resolve(r);
      }),
    );
  }
  const withToken = (token: string) =>
    grpc.credentials.combineChannelCredentials(
      grpc.credentials.createSsl(read('ca.crt')),
      grpc.credentials.createFromMetadataGenerator((_p, cb) => {
        const md = new grpc.Metadata();
        md.set('authorization', `Bearer ${token}`);
        cb(null, md);
      }),
    );

  it('answers a client with a certificate, across sites over mTLS', async () => {
    const res = await f.aggregate('east-pod-1-a', { operation: 'echo' });
    expect(res.summary).toMatchObject({ podsAsked: 3, podsOk: 3 });
    expect(res.pods.find((p) => p.site === 'west')!.answeredBy).toBe('west-pod-1-a');
  });

  it('answers a client with a valid bearer token, and refuses a wrong one', async () => {
    expect((await aggregateWith(withToken(TOKEN))).summary?.podsOk).toBe(3);
    await expect(aggregateWith(withToken('wrong-token'))).rejects.toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
    });
  });

  it('refuses a client without credentials (UNAUTHENTICATED) and a plaintext client (no TLS)', async () => {
    await expect(aggregateWith(grpc.credentials.createSsl(read('ca.crt')))).rejects.toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
      details: expect.stringContaining('credentials required'),
    });
    await expect(aggregateWith(grpc.credentials.createInsecure())).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });
  });

  it('serves AdminService/GetStatus to authenticated clients only', async () => {
    expect((await f.status('east-pod-1-a')).broker?.id).toBe('east-pod-1-a');
    const c = new AdminServiceClient(entry(), grpc.credentials.createSsl(read('ca.crt')));
    await expect(
      new Promise((resolve, reject) =>
        c.getStatus({}, new grpc.Metadata(), { deadline: Date.now() + 3000 }, (e, r) =>
          e ? reject(e) : resolve(r),
        ),
      ),
    ).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    c.close();
  });

  it('refuses FederationService to anyone but a broker of the topology', async () => {
    const local = LocalRequest.fromPartial({
      operation: 'echo',
      hops: 1,
      target: { site: 'east', pod: 'pod-1', endpoints: [] },
      deadline: { seconds: 2, nanos: 0 },
    });
    const call = (creds: grpc.ChannelCredentials) => {
      const c = new FederationServiceClient(entry(), creds);
      return new Promise((resolve, reject) =>
        c.localRequest(local, new grpc.Metadata(), { deadline: Date.now() + 3000 }, (e, r) => {
          c.close();
          return e ? reject(e) : resolve(r);
        }),
      );
    };
    await expect(call(f.credentials)).rejects.toMatchObject({
      code: grpc.status.PERMISSION_DENIED,
      details: expect.stringContaining('caller "client" is not one'),
    });
    await expect(call(withToken(TOKEN))).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(call(grpc.credentials.createSsl(read('ca.crt')))).rejects.toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
    });
    // A broker's own certificate is accepted.
    await expect(
      call(grpc.credentials.createSsl(read('ca.crt'), read('east-pod-1-b.key'), read('east-pod-1-b.crt'))),
    ).resolves.toMatchObject({ pod: { code: 0 } });

    // The streamed SiteRequest is refused to clients the same way.
    const stream = (creds: grpc.ChannelCredentials) => {
      const c = new FederationServiceClient(entry(), creds);
      const s = c.streamSiteRequest(
        SiteRequest.fromPartial({ operation: 'echo', hops: 1 }),
        new grpc.Metadata(),
        {
          deadline: Date.now() + 3000,
        },
      );
      return new Promise((resolve, reject) => {
        s.on('data', () => undefined);
        s.on('error', (e) => {
          c.close();
          reject(e);
        });
        s.on('end', () => {
          c.close();
          resolve(undefined);
        });
      });
    };
    await expect(stream(f.credentials)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(stream(withToken(TOKEN))).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });

    // A client can never open a federation session: refused before any frame is read; a broker can.
    const session = (creds: grpc.ChannelCredentials) => {
      const c = new FederationServiceClient(entry(), creds);
      const s = c.session(new grpc.Metadata(), { deadline: Date.now() + 3000 });
      s.write({ id: 1, frame: { $case: 'local', local }, stream: false, timeoutMs: 2000, traceparent: '' });
      return new Promise<unknown>((resolve, reject) => {
        s.on('data', (answer: unknown) => {
          s.cancel();
          c.close();
          resolve(answer);
        });
        s.on('error', (e) => {
          c.close();
          reject(e);
        });
      });
    };
    const brokerCreds = grpc.credentials.createSsl(
      read('ca.crt'),
      read('east-pod-1-b.key'),
      read('east-pod-1-b.crt'),
    );
    if (process.env.WANAS_SESSIONS === 'off') {
      // Brokers without sessions (the suite's unary pass) do not serve the method at all.
      await expect(session(brokerCreds)).rejects.toMatchObject({ code: grpc.status.UNIMPLEMENTED });
      return;
    }
    await expect(session(f.credentials)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(session(withToken(TOKEN))).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(session(grpc.credentials.createSsl(read('ca.crt')))).rejects.toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
    });
    await expect(session(brokerCreds)).resolves.toMatchObject({ id: 1 });
  });

  it('does not take a certificate from another CA as an identity, not even one naming a broker', async () => {
    const other = await createTlsDir(path.join(f.dir, 'other-ca'), ['east-pod-1-b']);
    const creds = grpc.credentials.createSsl(
      read('ca.crt'),
      fs.readFileSync(other.clientKey),
      fs.readFileSync(other.clientCert),
    );
    // The TLS layer drops the connection (the client sees the reset), or the call is refused as unauthenticated.
    const refused = [grpc.status.UNAUTHENTICATED, grpc.status.UNAVAILABLE, grpc.status.INTERNAL];
    const servedBefore = f.brokers
      .get('east-pod-1-a')!
      .logs.filter((l) => l.message === 'served' && l.code === 'OK').length;
    const e1 = await aggregateWith(creds).then(
      () => ({ code: grpc.status.OK }),
      (e: grpc.ServiceError) => e,
    );
    expect(refused).toContain(e1.code);
    const forged = grpc.credentials.createSsl(
      read('ca.crt'),
      fs.readFileSync(path.join(f.dir, 'other-ca', 'east-pod-1-b.key')),
      fs.readFileSync(path.join(f.dir, 'other-ca', 'east-pod-1-b.crt')),
    );
    const c = new FederationServiceClient(entry(), forged);
    const local = LocalRequest.fromPartial({
      operation: 'echo',
      hops: 1,
      target: { site: 'east', pod: 'pod-1', endpoints: [] },
    });
    const e2 = await new Promise<{ code: number }>((resolve) =>
      c.localRequest(local, new grpc.Metadata(), { deadline: Date.now() + 3000 }, (e) =>
        resolve(e ?? { code: grpc.status.OK }),
      ),
    );
    expect(refused).toContain(e2.code);
    c.close();
    await new Promise((r) => setTimeout(r, 100));
    expect(
      f.brokers.get('east-pod-1-a')!.logs.filter((l) => l.message === 'served' && l.code === 'OK').length,
    ).toBe(servedBefore);
  });

  it('picks up a replaced certificate without a restart', async () => {
    const b = f.brokers.get('west-pod-1-a')!;
    const serial = () =>
      new Promise<string>((resolve, reject) => {
        const [host, port] = b.address.split(':');
        const s = tls.connect(
          { host, port: Number(port), ca: read('ca.crt'), servername: 'localhost', ALPNProtocols: ['h2'] },
          () => {
            const sn = s.getPeerCertificate().serialNumber;
            s.destroy();
            resolve(sn);
          },
        );
        s.on('error', reject);
      });
    const before = await serial();
    // A new certificate for the same broker from the same CA, written over the old files.
    await reissueCertificate(certs, 'west-pod-1-a');
    let after = before;
    for (let i = 0; i < 50 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await serial().catch(() => before);
    }
    expect(after).not.toBe(before);
    expect(b.proc!.exitCode).toBeNull();
  });

  it('never writes a token or key material into a log line', async () => {
    await aggregateWith(withToken(TOKEN));
    await aggregateWith(withToken('another-wrong-token-value')).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    const all = [...f.brokers.values()].flatMap((b) => b.logs.map((l) => JSON.stringify(l)));
    expect(all.length).toBeGreaterThan(10);
    expect(
      all.filter(
        (l) => l.includes(TOKEN) || l.includes('another-wrong-token-value') || l.includes('PRIVATE KEY'),
      ),
    ).toEqual([]);
    expect(all.some((l) => l.includes('"code":"UNAUTHENTICATED"'))).toBe(true);
  });
});
