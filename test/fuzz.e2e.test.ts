/**
 * Fuzz (fast-check) against a real broker process: generated hostile Aggregate, SiteRequest and
 * LocalRequest messages and random bytes on the wire. Each gets a defined gRPC status, the broker stays
 * SERVING, nothing crashes. Runs WANAS_FUZZ_RUNS requests per kind (default 10,000 in total).
 */
import * as grpc from '@grpc/grpc-js';
import {
  AggregateRequest,
  AggregationServiceClient,
  FederationServiceClient,
  LocalRequest,
  SiteRequest,
} from '@wanas/proto';
import fc from 'fast-check';
import { rawClient } from './support/raw-client';
import { Federation } from './support/federation';

const TOTAL_RUNS = Number(process.env.WANAS_FUZZ_RUNS ?? 10_000);
/** Every status a broker may answer a hostile request with; anything else (or a hang) is a defect. */
const DEFINED = new Set([
  grpc.status.OK,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.FAILED_PRECONDITION,
  grpc.status.PERMISSION_DENIED,
  grpc.status.NOT_FOUND,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.UNAVAILABLE,
  grpc.status.INTERNAL, // undecodable bytes only (grpc-js's own "Error deserializing request"); asserted below
]);

const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom(
    '',
    ' ',
    'sessions.find',
    'sessions.list',
    'pods.capacity',
    'desktops.provision',
    'echo',
    'east',
    'pod-1',
    'east/pod-1',
    '../../etc',
    '\u0000',
    'é🙂',
    'x'.repeat(300),
  ),
);
const json: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.string({ maxLength: 20 }),
    fc.double({ noNaN: true }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.string({ maxLength: 8 }), tie('value'), { maxKeys: 4 }),
  ),
})).value;
const deep = fc.integer({ min: 1, max: 40 }).map((n) => {
  let v: unknown = 'leaf';
  for (let i = 0; i < n; i++) v = { d: v };
  return v as Record<string, unknown>;
});
const params = fc.oneof(
  fc.dictionary(fc.oneof(fc.string({ maxLength: 10 }), fc.constantFrom('user', 'pool', 'sleepMs')), json, {
    maxKeys: 5,
  }),
  deep,
);
const duration = fc.option(
  fc.record({
    seconds: fc.integer({ min: -100, max: 100 }),
    nanos: fc.integer({ min: -999_999_999, max: 999_999_999 }),
  }),
  { nil: undefined },
);
const headers = fc.dictionary(
  fc.oneof(fc.string({ maxLength: 10 }), fc.constant('x'.repeat(200))),
  fc.string({ maxLength: 50 }),
  { maxKeys: 80 },
);
const window = fc.option(fc.record({ after: text, afterPod: text, limit: fc.nat(), maxBytes: fc.nat() }), {
  nil: undefined,
});
const endpoints = fc.array(fc.record({ brokerId: text, address: text }), { maxLength: 5 });

describe('fuzz (real broker process)', () => {
  let f: Federation;
  beforeAll(async () => {
    f = await Federation.start(
      { east: { 'pod-1': 1, 'pod-2': 1 }, west: { 'pod-1': 1 } },
      { attemptTimeoutMs: 200, maxTimeoutMs: 1000 },
    );
  }, 60_000);
  afterAll(async () => {
    await f?.stop();
  });

  const entry = () => f.brokers.get('east-pod-1-a')!.address;
  const opts = () => ({ deadline: Date.now() + 3000 });
  /** Starts a call and resolves with its error (null when it succeeded). */
  const answer = (start: (cb: (e: grpc.ServiceError | null) => void) => void) =>
    new Promise<grpc.ServiceError | null>((r) => start((e) => r(e)));
  const seen = new Map<number, number>();
  const check = (err: grpc.ServiceError | null) => {
    const code = err ? err.code : 0;
    seen.set(code, (seen.get(code) ?? 0) + 1);
    // grpc-js's own answer to bytes that do not decode; the broker itself never answers INTERNAL here.
    if (code === grpc.status.INTERNAL) expect(err!.details).toBe('Error deserializing request');
    return DEFINED.has(code);
  };

  it(`answers ${TOTAL_RUNS} generated hostile requests with defined statuses and stays SERVING`, async () => {
    const agg = new AggregationServiceClient(entry(), grpc.credentials.createInsecure());
    const fed = new FederationServiceClient(entry(), grpc.credentials.createInsecure());
    const runs = Math.max(1, Math.floor(TOTAL_RUNS / 4));
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            correlationId: text,
            operation: text,
            params,
            headers,
            timeout: duration,
            attemptTimeout: duration,
            scope: fc.record({
              sites: fc.array(text, { maxLength: 5 }),
              pods: fc.array(text, { maxLength: 5 }),
            }),
            idempotencyKey: text,
            hedge: fc.boolean(),
            pageSize: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 20_000 })),
            pageToken: fc.oneof(text, fc.constant('eyJ2IjoxfQ.c2ln')),
          }),
          async (req) =>
            check(
              await answer((cb) =>
                agg.aggregate(AggregateRequest.fromPartial(req as never), new grpc.Metadata(), opts(), cb),
              ),
            ),
        ),
        { numRuns: runs },
      );
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            correlationId: text,
            operation: text,
            params,
            headers,
            target: fc.record({ site: text, pod: text, endpoints }),
            deadline: duration,
            attemptTimeout: duration,
            pods: fc.array(text, { maxLength: 4 }),
            idempotencyKey: text,
            hops: fc.integer({ min: 0, max: 10 }),
            sourceSite: text,
            sourceBroker: text,
            hedge: fc.boolean(),
            page: window,
          }),
          async (req) =>
            check(
              await answer((cb) =>
                fed.siteRequest(SiteRequest.fromPartial(req as never), new grpc.Metadata(), opts(), cb),
              ),
            ),
        ),
        { numRuns: runs },
      );
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            correlationId: text,
            operation: text,
            params,
            headers,
            target: fc.record({
              site: fc.constantFrom('east', 'west', ''),
              pod: fc.constantFrom('pod-1', 'pod-2', ''),
              endpoints,
            }),
            deadline: duration,
            idempotencyKey: text,
            hops: fc.integer({ min: 0, max: 4 }),
            sourceSite: text,
            sourceBroker: text,
            page: window,
          }),
          async (req) =>
            check(
              await answer((cb) =>
                fed.localRequest(LocalRequest.fromPartial(req as never), new grpc.Metadata(), opts(), cb),
              ),
            ),
        ),
        { numRuns: runs },
      );
      // Random bytes on the wire, as the body of each method.
      const methods = [
        '/wanas.v1.AggregationService/Aggregate',
        '/wanas.v1.FederationService/SiteRequest',
        '/wanas.v1.FederationService/LocalRequest',
      ];
      const raw = rawClient(entry());
      await fc.assert(
        fc.asyncProperty(
          fc.uint8Array({ maxLength: 512 }),
          fc.integer({ min: 0, max: 2 }),
          async (bytes, m) => check(await raw.send(methods[m]!, Buffer.from(bytes))),
        ),
        { numRuns: runs },
      );
      raw.close();
    } finally {
      agg.close();
      fed.close();
    }
    await f.waitServing('east-pod-1-a', 2000);
    expect(f.brokers.get('east-pod-1-a')!.proc!.exitCode).toBeNull();
    const unhandled = [...f.brokers.values()].flatMap((b) =>
      b.logs.filter((l) => /unhandled|uncaught/i.test(JSON.stringify(l))),
    );
    expect(unhandled).toEqual([]);
    const total = [...seen.values()].reduce((a, b) => a + b, 0);
    console.log(`FIGURE fuzz: ${total} requests; by code ${JSON.stringify(Object.fromEntries(seen))}`);
    expect(total).toBeGreaterThanOrEqual(runs * 4);
  }, 600_000);
});
