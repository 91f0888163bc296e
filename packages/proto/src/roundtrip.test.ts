import * as grpc from '@grpc/grpc-js';
import {
  AggregateRequest,
  Hedging,
  Mode,
  AggregateResponse,
  AggregationServiceClient,
  AggregationServiceService,
  FederationServiceClient,
  FederationServiceService,
  LocalRequest,
  LocalResponse,
  SiteRequest,
  SiteResponse,
  StreamAggregateResponse,
  durationToMs,
  msToDuration,
} from './index';

const params = { user: 'alice', limit: 3, nested: { ok: true, list: [1, 'two', null] } };
const target = {
  site: 'us-east',
  pod: 'pod-1',
  endpoints: [
    { brokerId: 'use-1a', address: '127.0.0.1:7101' },
    { brokerId: 'use-1b', address: '127.0.0.1:7102' },
  ],
};
const podResult = {
  site: 'us-east',
  pod: 'pod-1',
  code: 0,
  message: '',
  result: { sessions: [{ id: 's1', desktop: 'd1' }], count: 1 },
  answeredBy: 'use-1a',
  attempts: [
    {
      brokerId: 'use-1b',
      address: '127.0.0.1:7102',
      code: 14,
      message: 'refused',
      latency: msToDuration(1.5),
      hedged: false,
    },
    {
      brokerId: 'use-1a',
      address: '127.0.0.1:7101',
      code: 0,
      message: '',
      latency: msToDuration(3),
      hedged: true,
    },
  ],
  latency: msToDuration(4.25),
  truncated: false,
  cursor: '',
};

describe('wanas.v1 contract over a real grpc-js server', () => {
  let server: grpc.Server;
  let address: string;
  const seen: unknown[] = [];

  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(AggregationServiceService, {
      aggregate: (
        call: grpc.ServerUnaryCall<AggregateRequest, AggregateResponse>,
        cb: grpc.sendUnaryData<AggregateResponse>,
      ) => {
        seen.push(call.request);
        cb(null, {
          correlationId: call.request.correlationId,
          pods: [podResult],
          summary: { podsAsked: 2, podsOk: 1, podsFailed: 1, failedByCode: { UNAVAILABLE: 1 } },
          reduced: { total: 1 },
          latency: msToDuration(12),
          answeredBy: 'use-1a',
          nextPageToken: 'next.page',
          truncated: true,
          sharedFrom: 'c-0',
          cached: true,
          age: msToDuration(1500),
        });
      },
      streamAggregate: (
        call: grpc.ServerWritableStream<{ request?: AggregateRequest }, StreamAggregateResponse>,
      ) => {
        seen.push(call.request);
        call.write({ event: { $case: 'pod', pod: podResult } });
        call.end();
      },
    });
    server.addService(FederationServiceService, {
      siteRequest: (
        call: grpc.ServerUnaryCall<SiteRequest, SiteResponse>,
        cb: grpc.sendUnaryData<SiteResponse>,
      ) => {
        seen.push(call.request);
        cb(null, {
          correlationId: call.request.correlationId,
          answeredBy: 'euw-1a',
          pods: [podResult, podResult],
        });
      },
      localRequest: (
        call: grpc.ServerUnaryCall<LocalRequest, LocalResponse>,
        cb: grpc.sendUnaryData<LocalResponse>,
      ) => {
        seen.push(call.request);
        cb(null, { correlationId: call.request.correlationId, pod: podResult });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server.forceShutdown());

  function unary<Req, Res>(
    fn: (req: Req, cb: (e: grpc.ServiceError | null, r: Res) => void) => unknown,
    req: Req,
  ) {
    return new Promise<Res>((resolve, reject) => fn(req, (e, r) => (e ? reject(e) : resolve(r))));
  }

  it('round-trips Aggregate with Struct params, headers, scope and Durations', async () => {
    const client = new AggregationServiceClient(address, grpc.credentials.createInsecure());
    const req: AggregateRequest = {
      correlationId: 'c-1',
      operation: 'sessions.find',
      params,
      headers: { tenant: 'acme', 'x-trace': 'abc' },
      timeout: msToDuration(2500),
      attemptTimeout: msToDuration(300),
      scope: { sites: ['us-east'], pods: ['pod-1', 'pod-2'] },
      idempotencyKey: 'k-1',
      hedge: true,
      hedging: Hedging.HEDGING_OFF,
      mode: Mode.MODE_FIRST,
      preferSites: ['eu-west', 'us-east'],
      minOk: 2,
      requiredSites: ['us-east'],
      pageSize: 1000,
      pageToken: 'token.sig',
      maxStaleness: msToDuration(2000),
    };
    const res = await unary<AggregateRequest, AggregateResponse>(client.aggregate.bind(client), req);
    expect(seen.at(-1)).toEqual(req);
    expect(res.pods[0]).toEqual(podResult);
    expect(res.summary?.failedByCode).toEqual({ UNAVAILABLE: 1 });
    expect(res.reduced).toEqual({ total: 1 });
    expect(res).toMatchObject({ nextPageToken: 'next.page', truncated: true });
    expect(durationToMs(res.latency)).toBe(12);
    expect(durationToMs(res.pods[0]?.attempts[0]?.latency)).toBeCloseTo(1.5);
    client.close();
  });

  it('streams StreamAggregate events', async () => {
    const client = new AggregationServiceClient(address, grpc.credentials.createInsecure());
    const events: StreamAggregateResponse[] = [];
    const stream = client.streamAggregate({ request: AggregateRequest.fromPartial({ operation: 'echo' }) });
    await new Promise<void>((resolve, reject) => {
      stream.on('data', (e: StreamAggregateResponse) => events.push(e));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    expect(events).toHaveLength(1);
    expect(events[0]?.event).toEqual({ $case: 'pod', pod: podResult });
    client.close();
  });

  it('round-trips SiteRequest and LocalRequest with their target lists', async () => {
    const client = new FederationServiceClient(address, grpc.credentials.createInsecure());
    const site: SiteRequest = {
      correlationId: 'c-2',
      operation: 'pods.capacity',
      params,
      headers: { a: 'b' },
      target: { ...target, pod: '' },
      deadline: msToDuration(900),
      attemptTimeout: msToDuration(250),
      pods: ['pod-2'],
      idempotencyKey: '',
      hops: 1,
      sourceSite: 'eu-west',
      sourceBroker: 'euw-1a',
      hedge: false,
      first: true,
      page: { after: 's-42', afterPod: 'us-east/pod-1', limit: 1000, maxBytes: 4_000_000 },
      client: 'token:ops',
    };
    const siteRes = await unary<SiteRequest, SiteResponse>(client.siteRequest.bind(client), site);
    expect(seen.at(-1)).toEqual(site);
    expect(siteRes.pods).toEqual([podResult, podResult]);

    const local: LocalRequest = {
      correlationId: 'c-3',
      operation: 'desktops.provision',
      params: { user: 'bob', pool: 'standard' },
      headers: {},
      target,
      deadline: msToDuration(400),
      idempotencyKey: 'idem-9',
      hops: 2,
      sourceSite: 'us-east',
      sourceBroker: 'use-1b',
      page: undefined,
      client: 'token:ops',
    };
    const localRes = await unary<LocalRequest, LocalResponse>(client.localRequest.bind(client), local);
    expect(seen.at(-1)).toEqual(local);
    expect(localRes).toEqual({ correlationId: 'c-3', pod: podResult });
    client.close();
  });
});
