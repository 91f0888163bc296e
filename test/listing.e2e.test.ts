/**
 * Paged listings on real brokers behind the WAN emulator: `sessions.list` over a seeded federation of
 * 20,000+ sessions, page by page, across a broker killed between pages (its pod's twin answers; the token
 * goes on through another entry broker), a site partitioned mid-listing (the page fails, the same token
 * answers after the heal), a tampered token, a streamed listing, an unpaged listing too large for one
 * message (cut, with the token to go on), and the Python client and buf curl.
 */
import * as grpc from '@grpc/grpc-js';
import { DevFederation } from '@wanas/devfed';
import {
  AggregateRequest,
  AggregationServiceClient,
  type AggregateResponse,
  type StreamAggregateResponse,
} from '@wanas/proto';
import * as path from 'node:path';
import { seedRows } from '../packages/broker/src/store/seed';
import { run } from './support/run';
import { until, untilSiteDown } from './support/until';

const ROOT = path.resolve(__dirname, '..');
const SESSIONS_PER_POD = 3400;
const MAX_MESSAGE_BYTES = 1024 * 1024;
const PAGE = 1000;

type Listed = { id: string; site: string; pod: string; state?: string };
const bytes = (s: string) => Buffer.from(s);
const inOrder = (a: Listed, b: Listed) =>
  Buffer.compare(bytes(a.id), bytes(b.id)) || (a.pod < b.pod ? -1 : 1);

describe('paged listings (real processes, emulated WAN)', () => {
  let f: DevFederation;
  /** Every session the seed put in the federation, in the listing's order. */
  let expected: Listed[];
  let disconnected: Listed[];
  const call = (entry: string, req: Partial<AggregateRequest>) =>
    f.aggregator(entry)({ operation: 'sessions.list', timeout: { seconds: 10, nanos: 0 }, ...req }, 15_000);
  const items = (r: AggregateResponse) =>
    (r.reduced!.sessions as Listed[]).map(({ id, site, pod }) => ({ id, site, pod }));

  beforeAll(async () => {
    f = await DevFederation.start({
      sites: 3,
      podsPerSite: 2,
      brokersPerPod: 2,
      wanLatencyMs: 5,
      sessions: () => SESSIONS_PER_POD,
      settings: { maxMessageBytes: MAX_MESSAGE_BYTES },
    });
    expected = ['s1', 's2', 's3']
      .flatMap((site) =>
        ['p1', 'p2'].flatMap((pod) =>
          seedRows(site, pod, undefined, SESSIONS_PER_POD).sessions.map((s) => ({
            id: s.id,
            site,
            pod,
            state: s.state,
          })),
        ),
      )
      .sort(inOrder);
    disconnected = expected.filter((s) => (s as { state?: string }).state === 'disconnected');
    expected = expected.map(({ id, site, pod }) => ({ id, site, pod }));
    disconnected = disconnected.map(({ id, site, pod }) => ({ id, site, pod }));
  }, 120_000);
  afterAll(async () => {
    await f?.stop();
  });

  it('lists 20,000+ sessions page by page, each once and in order, across a broker killed between pages', async () => {
    expect(expected.length).toBeGreaterThanOrEqual(20_000);
    const listed: Listed[] = [];
    let token = '';
    let entry = 's1-p1-a';
    for (let page = 1; page <= 40; page++) {
      const r = await call(entry, { pageSize: PAGE, pageToken: token });
      expect(r.summary).toMatchObject({ podsFailed: 0 });
      listed.push(...items(r));
      if (page < 20) expect(items(r)).toHaveLength(PAGE);
      token = r.nextPageToken;
      if (!token) break;
      // Between pages: the entry broker dies (the token goes on through another), then a remote pod's broker.
      if (page === 5) {
        await f.signal('s1-p1-a', 'SIGKILL');
        entry = 's2-p2-b';
      }
      if (page === 10) await f.signal('s3-p1-a', 'SIGKILL');
    }
    expect(token).toBe('');
    expect(listed).toEqual(expected);
  }, 120_000);

  it('fails a page while a site is partitioned, and the same token answers after the heal through another entry', async () => {
    const first = await call('s1-p2-a', { pageSize: PAGE });
    f.wan.cut('s3');
    try {
      // Once the entry has found s3 silent (an event to wait for: within a 2 s budget on a loaded machine
      // the pods could still end DEADLINE_EXCEEDED instead), the page fails at once, naming its pods.
      await untilSiteDown(() => f.status('s1-p2-a'), 's3');
      const e = await call('s1-p2-a', {
        pageSize: PAGE,
        pageToken: first.nextPageToken,
        timeout: { seconds: 2, nanos: 0 },
      }).catch((err: grpc.ServiceError) => err);
      expect((e as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
      expect((e as grpc.ServiceError).details).toMatch(
        /^a listing needs every pod that still has items \(send the same page_token again\): 2 pod\(s\) failed: s3\/p1/,
      );
    } finally {
      f.wan.heal('s3');
    }
    let second: AggregateResponse | undefined;
    await until(
      'the page answers after the heal',
      async () => {
        second = await call('s2-p1-a', { pageSize: PAGE, pageToken: first.nextPageToken }).catch(
          () => undefined,
        );
        return second !== undefined;
      },
      30_000,
    );
    expect(items(second!)).toEqual(expected.slice(PAGE, 2 * PAGE));
    // The next tests' entry has every pod back too (its channels to s3 reconnect after the heal).
    await until(
      's1-p2-a answers from every pod again',
      async () =>
        ((
          await f
            .aggregator('s1-p2-a')({ operation: 'echo' })
            .catch(() => undefined)
        )?.summary?.podsOk ?? 0) === 6,
      30_000,
    );
  }, 60_000);

  it('refuses a tampered token, or one sent with other params, naming why', async () => {
    const first = await call('s1-p2-a', { pageSize: 10 });
    const [body, mac] = first.nextPageToken.split('.');
    const payload = JSON.parse(Buffer.from(body!, 'base64url').toString()) as { a: string };
    payload.a = '';
    const tampered = `${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${mac}`;
    const e1 = (await call('s1-p2-a', { pageSize: 10, pageToken: tampered }).catch(
      (e: unknown) => e,
    )) as grpc.ServiceError;
    expect(e1.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e1.details).toBe(
      'page_token: altered, or made by another federation: its signature does not match',
    );
    const e2 = (await call('s1-p2-a', {
      pageSize: 10,
      pageToken: first.nextPageToken,
      params: { state: 'connected' },
    }).catch((e: unknown) => e)) as grpc.ServiceError;
    expect(e2.details).toBe('page_token: made for other params: send the same params on every page');
    const e3 = (await f
      .aggregator('s1-p2-a')({ operation: 'echo', pageSize: 10 })
      .catch((e: unknown) => e)) as grpc.ServiceError;
    expect(e3.details).toMatch(/^page_size: operation "echo" is not pageable/);
  });

  it('cuts an unpaged listing too large for one message at an item, with the token to go on', async () => {
    const r = await call('s1-p2-a', {});
    expect(r.truncated).toBe(true);
    expect(r.nextPageToken).not.toBe('');
    const got = items(r);
    expect(got.length).toBeGreaterThan(1000);
    expect(got).toEqual(expected.slice(0, got.length));
    const rest = await call('s1-p2-a', { pageToken: r.nextPageToken });
    expect(items(rest)[0]).toEqual(expected[got.length]);
  });

  /** A StreamAggregate listing from `entry` to its end, or until it fails (its error then). */
  const streamListing = (entry: string, pageSize: number, deadlineMs: number) => {
    const client = f.track(new AggregationServiceClient(f.broker(entry).address, f.clientCredentials));
    const got = { listed: [] as Listed[], pages: 0, done: undefined as AggregateResponse | undefined };
    return new Promise<typeof got & { error?: grpc.ServiceError }>((resolve) => {
      const stream = client.streamAggregate(
        { request: AggregateRequest.fromPartial({ operation: 'sessions.list', pageSize }) },
        new grpc.Metadata(),
        { deadline: Date.now() + deadlineMs },
      );
      stream.on('data', (m: StreamAggregateResponse) => {
        if (m.event?.$case === 'page') {
          got.pages++;
          got.listed.push(...items(m.event.page));
        } else if (m.event?.$case === 'done') got.done = m.event.done;
      });
      stream.on('end', () => resolve(got));
      stream.on('error', (error: grpc.ServiceError) => resolve({ ...got, error }));
    });
  };

  it('streams every page of a listing (StreamAggregate)', async () => {
    const got = await streamListing('s2-p1-b', 2500, 60_000);
    expect(got.error).toBeUndefined();
    expect(got.pages).toBe(Math.ceil(expected.length / 2500));
    expect(got.listed).toEqual(expected);
    expect(got.done?.nextPageToken).toBe('');
  }, 60_000);

  it("ends a streamed listing at the caller's deadline, with what it sent a prefix in order", async () => {
    // 10 a page: thousands of pages, far more than 1.5 s allows.
    const got = await streamListing('s1-p2-a', 10, 1500);
    expect(got.error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(got.pages).toBeGreaterThan(0);
    expect(got.listed.length).toBeLessThan(expected.length);
    expect(got.listed).toEqual(expected.slice(0, got.listed.length));
  }, 30_000);

  it('lists through a frozen broker (SIGSTOP): its twin answers, every session once and in order', async () => {
    const frozen = f.broker('s3-p2-a').proc!;
    frozen.kill('SIGSTOP');
    try {
      const listed: Listed[] = [];
      let token = '';
      for (let page = 0; page < 3; page++) {
        const r = await call('s1-p2-a', { pageSize: PAGE, pageToken: token });
        expect(r.summary).toMatchObject({ podsFailed: 0 });
        listed.push(...items(r));
        token = r.nextPageToken;
      }
      expect(listed).toEqual(expected.slice(0, 3 * PAGE));
    } finally {
      frozen.kill('SIGCONT');
    }
  }, 60_000);

  it('lists through the Python client (every page) and buf curl (one page)', async () => {
    const address = f.broker('s1-p2-a').address;
    const py = await run('/usr/bin/python3', [
      path.join(ROOT, 'examples/clients/python/client.py'),
      '--address',
      address,
      '--op',
      'sessions.list',
      '--param',
      'state=disconnected',
      '--page-size',
      '3000',
      '--all-pages',
    ]);
    const lines = py.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Listed & { state: string });
    expect(py.stderr).toMatch(/^listed \d+ item\(s\) in \d+ page\(s\)\n$/);
    expect(lines.every((s) => s.state === 'disconnected')).toBe(true);
    expect(lines.map(({ id, site, pod }) => ({ id, site, pod }))).toEqual(disconnected);
    const buf = await run(path.join(ROOT, 'node_modules/.bin/buf'), [
      'curl',
      '--protocol',
      'grpc',
      '--http2-prior-knowledge',
      '-d',
      '{"operation":"sessions.list","pageSize":5}',
      `http://${address}/wanas.v1.AggregationService/Aggregate`,
    ]);
    expect(buf.stderr).toBe('');
    const json = JSON.parse(buf.stdout) as { reduced: { sessions: { id: string }[] }; nextPageToken: string };
    expect(json.reduced.sessions.map((s) => s.id)).toEqual(expected.slice(0, 5).map((s) => s.id));
    expect(json.nextPageToken).toMatch(/^[\w-]+\.[\w-]+$/);
  });
});
