/**
 * Hardening with real broker processes: overload is refused fast, garbage is refused without a crash,
 * federation requests that could loop or amplify are refused, a write is done once even when failover
 * resends it to a twin, and SIGTERM drains in-flight calls before exiting 0.
 */
import * as grpc from '@grpc/grpc-js';
import {
  FederationServiceClient,
  LocalRequest,
  SiteRequest,
  msToDuration,
  type AggregateResponse,
} from '@wanas/proto';
import Database from 'better-sqlite3';
import * as path from 'node:path';
import { rawClient } from './support/raw-client';
import { Federation } from './support/federation';

const SPEC = { east: { 'pod-1': 2, 'pod-2': 2 }, west: { 'pod-1': 2 } };

function federationCall<Req>(
  address: string,
  method: 'siteRequest' | 'localRequest',
  req: Req,
): Promise<unknown> {
  const c = new FederationServiceClient(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) =>
    (
      c[method] as unknown as (
        r: Req,
        m: grpc.Metadata,
        o: grpc.CallOptions,
        cb: (e: grpc.ServiceError | null, r?: unknown) => void,
      ) => void
    )(req, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, r) => {
      c.close();
      return e ? reject(e) : resolve(r);
    }),
  );
}

describe('hardening (real processes)', () => {
  let f: Federation;
  beforeAll(async () => {
    f = await Federation.start(SPEC, { attemptTimeoutMs: 300, maxInFlightAggregates: 3 });
  }, 60_000);
  afterAll(async () => {
    await f?.stop();
  });

  it('refuses aggregates beyond the in-flight limit fast with RESOURCE_EXHAUSTED, then serves again', async () => {
    const slow = {
      operation: 'echo',
      params: { sleepMs: 600, sleepPod: 'east/pod-1' },
      timeout: msToDuration(3000),
    };
    const started = Date.now();
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, () =>
        f.aggregateOnce('east-pod-1-a', slow).then(
          () => ({ code: 0, ms: Date.now() - started }),
          (e: grpc.ServiceError) => ({ code: e.code, ms: Date.now() - started, details: e.details }),
        ),
      ),
    );
    const refused = outcomes.filter((o) => o.code === grpc.status.RESOURCE_EXHAUSTED);
    expect(outcomes.filter((o) => o.code === 0)).toHaveLength(3);
    expect(refused).toHaveLength(5);
    for (const r of refused) expect(r.ms).toBeLessThan(400);
    expect((refused[0] as { details: string }).details).toContain('limit of 3 in-flight aggregates');
    expect((await f.aggregate('east-pod-1-a', { operation: 'echo' })).summary?.podsOk).toBe(3);
  });

  it('answers garbage bytes with an error status and keeps serving', async () => {
    const c = rawClient(f.brokers.get('east-pod-1-a')!.address);
    for (const bytes of [
      Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]),
      Buffer.from('not a protobuf at all, just text'),
      Buffer.alloc(1000, 0xaa),
    ]) {
      // An Aggregate arrives as bytes (admitted before it is decoded): the broker names what is wrong,
      // streamed or not.
      for (const method of ['Aggregate', 'StreamAggregate']) {
        const err = await c.send(`/wanas.v1.AggregationService/${method}`, bytes);
        expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
        expect(err?.details).toMatch(new RegExp(`^the ${method} request could not be decoded: |operation`));
      }
    }
    c.close();
    // Each was admitted before it was decoded: its share was given back.
    expect((await f.status('east-pod-1-a')).admission?.inFlight).toBe(0);
    expect((await f.aggregate('east-pod-1-a', { operation: 'echo' })).summary?.podsOk).toBe(3);
  });

  it('refuses federation requests that could loop or amplify', async () => {
    const west = f.brokers.get('west-pod-1-a')!.address;
    const east = f.brokers.get('east-pod-1-a')!.address;
    const base = { operation: 'echo', deadline: msToDuration(2000) };
    const cases: [() => Promise<unknown>, number, RegExp][] = [
      [
        () =>
          federationCall(
            west,
            'siteRequest',
            SiteRequest.fromPartial({
              ...base,
              hops: 3,
              sourceSite: 'east',
              target: { site: 'west', pod: '', endpoints: [] },
            }),
          ),
        grpc.status.FAILED_PRECONDITION,
        /hops/,
      ],
      [
        () =>
          federationCall(
            west,
            'siteRequest',
            SiteRequest.fromPartial({
              ...base,
              hops: 1,
              sourceSite: 'west',
              target: { site: 'west', pod: '', endpoints: [] },
            }),
          ),
        grpc.status.FAILED_PRECONDITION,
        /own site/,
      ],
      [
        () =>
          federationCall(
            west,
            'siteRequest',
            SiteRequest.fromPartial({
              ...base,
              hops: 1,
              sourceSite: 'east',
              target: { site: 'east', pod: '', endpoints: [] },
            }),
          ),
        grpc.status.FAILED_PRECONDITION,
        /reached a broker of site "west"/,
      ],
      [
        () =>
          federationCall(
            west,
            'siteRequest',
            SiteRequest.fromPartial({
              ...base,
              hops: 1,
              sourceSite: 'east',
              target: { site: 'west', pod: '', endpoints: [{ brokerId: 'evil', address: '10.0.0.1:1' }] },
            }),
          ),
        grpc.status.PERMISSION_DENIED,
        /"evil" is not a broker/,
      ],
      [
        () =>
          federationCall(
            east,
            'localRequest',
            LocalRequest.fromPartial({
              ...base,
              hops: 1,
              target: { site: 'east', pod: 'pod-2', endpoints: [] },
            }),
          ),
        grpc.status.FAILED_PRECONDITION,
        /reached a broker of east\/pod-1/,
      ],
      [
        () =>
          federationCall(
            east,
            'localRequest',
            LocalRequest.fromPartial({
              ...base,
              deadline: msToDuration(-5),
              hops: 1,
              target: { site: 'east', pod: 'pod-1', endpoints: [] },
            }),
          ),
        grpc.status.INVALID_ARGUMENT,
        /deadline: must be positive/,
      ],
    ];
    for (const [call, code, msg] of cases)
      await expect(call()).rejects.toMatchObject({ code, details: expect.stringMatching(msg) });
  });

  it('provisions once per key even when failover resends the write to a twin', async () => {
    // Freeze the broker of east/pod-2 the entry sends to first now (the one that answers a read); it
    // orders and rotates among ready twins, so within a few writes one goes to the frozen broker first
    // and is resent to the twin.
    const probe = await f.aggregate('east-pod-1-a', {
      operation: 'echo',
      scope: { sites: [], pods: ['east/pod-2'] },
    });
    const frozen = probe.pods[0]!.answeredBy;
    expect(frozen).toMatch(/^east-pod-2-[ab]$/);
    const twin = frozen === 'east-pod-2-a' ? 'east-pod-2-b' : 'east-pod-2-a';
    await f.signal(frozen, 'SIGSTOP');
    const results: AggregateResponse[] = [];
    try {
      for (let i = 0; i < 10 && !results.some((r) => r.pods[0]!.attempts.length > 1); i++) {
        results.push(
          await f.aggregate('east-pod-1-a', {
            operation: 'desktops.provision',
            params: { user: 'once', pool: 'gpu' }, // 12 free desktops: room for every write below
            scope: { sites: [], pods: ['east/pod-2'] },
            idempotencyKey: `key-once-${i}`,
            attemptTimeout: msToDuration(300),
            timeout: msToDuration(3000),
          }),
        );
      }
    } finally {
      await f.signal(frozen, 'SIGCONT');
    }
    const resent = results.find((r) => r.pods[0]!.attempts.length > 1)!;
    // The write reached the frozen broker, timed out there, and was sent to an equivalent broker too.
    const tried = resent.pods[0]!.attempts;
    expect(tried.find((a) => a.brokerId === frozen)?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(tried.map((a) => a.brokerId).sort()).toEqual([frozen, twin].sort());
    // A client that got no answer resends the same key until it does (the twin may have waited on the
    // pod store's write lock while its frozen sibling held it); the store must never act twice.
    for (const [i, r] of results.entries()) {
      let code = r.pods[0]!.code;
      for (let k = 0; k < 5 && code !== 0; k++) {
        const again = await f.aggregate('east-pod-1-a', {
          operation: 'desktops.provision',
          params: { user: 'once', pool: 'gpu' }, // 12 free desktops: room for every write below
          scope: { sites: [], pods: ['east/pod-2'] },
          idempotencyKey: `key-once-${i}`,
          timeout: msToDuration(5000),
        });
        code = again.pods[0]!.code;
      }
      expect({ key: `key-once-${i}`, code }).toEqual({ key: `key-once-${i}`, code: 0 });
    }
    // The frozen broker wakes up and runs the timed-out attempt late: the pod's store hands back the
    // first result instead of assigning a second desktop.
    await new Promise((r) => setTimeout(r, 700));
    const db = new Database(path.join(f.dir, 'data', 'east.pod-2.sqlite'), { readonly: true });
    const rows = db.prepare("SELECT id FROM desktops WHERE user = 'once'").all();
    const keys = db.prepare("SELECT key FROM idempotency WHERE key LIKE 'key-once-%'").all();
    db.close();
    expect(rows).toHaveLength(results.length);
    expect(keys).toHaveLength(results.length);
  });

  it('drains in-flight calls on SIGTERM, exits 0, and peers move to the twin', async () => {
    const victim = 'east-pod-2-b';
    const slow = f.aggregate(victim, {
      operation: 'echo',
      params: { sleepMs: 700, sleepPod: 'east/pod-2' },
      timeout: msToDuration(3000),
      scope: { sites: [], pods: ['east/pod-2'] },
    });
    await new Promise((r) => setTimeout(r, 150));
    const proc = f.brokers.get(victim)!.proc!;
    const exit = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    proc.kill('SIGTERM');
    const res = await slow;
    expect(res.pods[0]).toMatchObject({ code: 0, answeredBy: victim });
    expect(await exit).toBe(0);
    for (let i = 0; i < 5; i++) {
      const again = await f.aggregate('west-pod-1-a', { operation: 'echo', timeout: msToDuration(2000) });
      expect(again.summary?.podsOk).toBe(3);
    }
    await f.startBroker(victim);
  });
});
