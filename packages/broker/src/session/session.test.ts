/**
 * Federation sessions over a real grpc-js server and channel on loopback: the serving side with handlers
 * that stand in for the dispatcher (they answer, stall, fail or answer large on request), the calling side
 * as a broker uses it (pool, session, request calls). Each test says one guarantee.
 */
import * as grpc from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import {
  FederationServiceClient,
  FederationServiceService,
  LocalRequest,
  SiteRequest,
  type LocalResponse,
  type PodResult,
} from '@wanas/proto';
import { createLogger, transports } from 'winston';
import { BrokerError } from '../errors';
import type { PeerSession } from './peer-session';
import { SessionPool } from './session-pool';
import { FEDERATION_SERVICE, SessionServer, type SessionHandlers } from './session-server';
import type { ServedFrame } from './served-frame';

const log = createLogger({ silent: true, transports: [new transports.Console()] });

/** Resolves after `ms`. */
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every 10 ms, at most `limitMs`. */
async function until(what: string, cond: () => boolean, limitMs = 5000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${limitMs} ms`);
    await sleep(10);
  }
}

const pod = (name: string, result: Record<string, unknown> = {}): PodResult =>
  ({
    site: 's',
    pod: name,
    code: 0,
    message: '',
    result,
    answeredBy: 'b',
    attempts: [],
  }) as unknown as PodResult;

/** The test's stand-in for the dispatcher: what each operation does, and what it saw. */
class Backend implements SessionHandlers {
  /** Calls being worked on now, by operation. */
  readonly working = new Map<string, ServedFrame[]>();
  /** Calls that saw their cancel. */
  readonly cancelled: string[] = [];
  /** Released by the test: the `wait` operation answers then. */
  private release!: () => void;
  released = new Promise<void>((r) => (this.release = r));

  open(): void {
    this.release();
  }

  async local(call: ServedFrame, req: LocalRequest): Promise<LocalResponse> {
    return { correlationId: req.correlationId, pod: await this.run(call, req.operation, req.params) };
  }

  async site(call: ServedFrame, req: SiteRequest, onPod?: (p: PodResult) => void) {
    const pods = [await this.run(call, req.operation, req.params), pod('two')];
    for (const p of pods) onPod?.(p);
    return { correlationId: req.correlationId, answeredBy: 'b', pods };
  }

  private async run(call: ServedFrame, op: string, params: unknown): Promise<PodResult> {
    call.sendMetadata();
    const list = this.working.get(op) ?? [];
    this.working.set(op, [...list, call]);
    call.on('cancelled', () => this.cancelled.push(op));
    try {
      if (op === 'fail') throw { code: grpc.status.NOT_FOUND, details: 'no such thing' };
      if (op === 'stall') await new Promise((r) => call.on('cancelled', () => r(undefined)));
      if (op === 'wait' || op === 'big') await this.released;
      if (op === 'big') return pod('one', { blob: 'x'.repeat(2 * 1024 * 1024) });
      return pod('one', { echo: params });
    } finally {
      this.working.set(
        op,
        (this.working.get(op) ?? []).filter((c) => c !== call),
      );
    }
  }
}

/** A real server on 127.0.0.1:0 serving sessions (or not, as an older version), and a client to it. */
async function serve(opts: { sessions?: boolean; refuse?: boolean; partBytes?: number } = {}) {
  const backend = new Backend();
  const server = new grpc.Server();
  const sessions = new SessionServer({
    handlers: backend,
    authorize: () => {
      if (opts.refuse) throw new BrokerError(grpc.status.PERMISSION_DENIED, 'not a broker');
    },
    partBytes: opts.partBytes,
  });
  const unary = {
    siteRequest: () => undefined,
    streamSiteRequest: () => undefined,
    localRequest: () => undefined,
  };
  if (opts.sessions === false) server.addService(FederationServiceService, unary);
  else server.addService(FEDERATION_SERVICE, { ...unary, session: sessions.handle });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  const client = new FederationServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  await new Promise<void>((res, rej) => client.waitForReady(Date.now() + 5000, (e) => (e ? rej(e) : res())));
  return { backend, server, sessions, client };
}

/** A pool's open session to `client` (it opens one at the first pick). */
async function sessionTo(pool: SessionPool, client: FederationServiceClient): Promise<PeerSession> {
  let s: PeerSession | undefined;
  await until('a session opens', () => !!(s = pool.pick(client)));
  return s!;
}

const local = (operation: string) => ({
  frame: { $case: 'local' as const, local: LocalRequest.fromPartial({ correlationId: 'c1', operation }) },
  stream: false,
  traceparent: '',
});
const inSec = (s: number) => new Date(Date.now() + s * 1000);
const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 0,
    (e: ServiceError) => e.code,
  );

describe('federation sessions (real grpc-js server and channel)', () => {
  const cleanups: (() => void)[] = [];
  const newPool = (maxInFlight = 1024, perPeer = 1) => {
    const pool = new SessionPool({ perPeer, maxInFlight, retryAfterMs: 60_000, log });
    cleanups.push(() => pool.close());
    return pool;
  };
  const started = async (opts?: Parameters<typeof serve>[0]) => {
    const s = await serve(opts);
    cleanups.push(() => {
      s.client.close();
      s.server.forceShutdown();
    });
    return s;
  };
  afterEach(() => cleanups.splice(0).forEach((c) => c()));

  it('answers many requests as frames on one stream: local, site, and site pod by pod', async () => {
    const { client } = await started();
    const pool = newPool();
    const session = await sessionTo(pool, client);
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) => session.request(local(`op-${i}`), inSec(5)).promise),
    );
    expect(answers.map((a) => a.answer?.$case)).toEqual(Array(200).fill('local'));
    const streamed: string[] = [];
    const site = SiteRequest.fromPartial({ operation: 'echo' });
    const last = await session.request(
      { frame: { $case: 'site', site }, stream: true, traceparent: '' },
      inSec(5),
      (p) => streamed.push(p.pod),
    ).promise;
    expect(streamed).toEqual(['one', 'two']);
    expect(last.answer).toMatchObject({ $case: 'site', site: { pods: [] } });
    expect(pool.stats()).toEqual({ open: 1, opening: 0, inFlight: 0 });
  });

  it('acknowledges a request it works on, and fails one as its call would (code and message)', async () => {
    const { client, backend } = await started();
    const session = await sessionTo(newPool(), client);
    const call = session.request(local('wait'), inSec(5));
    await until('the request is acknowledged', () => call.acknowledged!());
    backend.open();
    await call.promise;
    await expect(session.request(local('fail'), inSec(5)).promise).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
      details: 'no such thing',
    });
  });

  it('a cancel reaches the peer, and interleaved cancels leave the other requests alone', async () => {
    const { client, backend } = await started();
    const session = await sessionTo(newPool(), client);
    const stalls = Array.from({ length: 6 }, () => session.request(local('stall'), inSec(10)));
    const waits = Array.from({ length: 6 }, () => session.request(local('wait'), inSec(10)));
    await until('all are worked on', () => (backend.working.get('stall')?.length ?? 0) === 6);
    stalls.forEach((c, i) => i % 2 === 0 && c.cancel());
    await until('the peer saw three cancels', () => backend.cancelled.length === 3);
    stalls.forEach((c, i) => i % 2 === 1 && c.cancel());
    backend.open();
    expect(await Promise.all(stalls.map((c) => codeOf(c.promise)))).toEqual(
      Array(6).fill(grpc.status.CANCELLED),
    );
    expect(await Promise.all(waits.map((c) => codeOf(c.promise)))).toEqual(Array(6).fill(0));
    await until('the peer saw six cancels', () => backend.cancelled.length === 6);
    expect(backend.cancelled).toEqual(Array(6).fill('stall'));
  });

  it('a deadline ends the request on both sides (DEADLINE_EXCEEDED here, cancelled there)', async () => {
    const { client, backend } = await started();
    const session = await sessionTo(newPool(), client);
    await expect(session.request(local('stall'), new Date(Date.now() + 150)).promise).rejects.toMatchObject({
      code: grpc.status.DEADLINE_EXCEEDED,
    });
    await until('the peer stopped the work', () => backend.cancelled.includes('stall'));
  });

  it('holds requests past its in-flight bound until one ends (back-pressure)', async () => {
    const { client, backend } = await started();
    const session = await sessionTo(newPool(2), client);
    const calls = Array.from({ length: 5 }, () => session.request(local('stall'), inSec(10)));
    const codes = Promise.all(calls.map((c) => codeOf(c.promise)));
    await until('two are worked on', () => backend.working.get('stall')?.length === 2);
    await sleep(100);
    expect(backend.working.get('stall')).toHaveLength(2);
    expect(session.load).toBe(5);
    calls[0]!.cancel();
    await until(
      'the next one went',
      () => backend.cancelled.length === 1 && backend.working.get('stall')?.length === 2,
    );
    calls.slice(1).forEach((c) => c.cancel());
    expect(await codes).toEqual(Array(5).fill(grpc.status.CANCELLED));
    expect(session.load).toBe(0);
  });

  it('sends a large answer in pieces: the small answers beside it are not held up behind it', async () => {
    const { client, backend } = await started({ partBytes: 16 * 1024 });
    const session = await sessionTo(newPool(), client);
    const order: string[] = [];
    const big = session.request(local('big'), inSec(10));
    // The large answer is made once the small requests are worked on; they answer right after it is sent.
    const bigDone = (async () => {
      await until('small requests are worked on', () => backend.working.get('wait')?.length === 4);
      backend.open();
    })();
    const small = Array.from({ length: 4 }, () => session.request(local('wait'), inSec(10)));
    for (const c of small) void c.promise.then(() => order.push('small'));
    void big.promise.then(() => order.push('big'));
    await Promise.all([bigDone, big.promise, ...small.map((c) => c.promise)]);
    expect(order).toEqual(['small', 'small', 'small', 'small', 'big']);
    const answer = (await big.promise).answer;
    expect(answer?.$case === 'local' && answer.local.pod?.result).toBeTruthy();
  });

  it('a session the peer drops fails its requests in flight at once (UNAVAILABLE); the next goes unary', async () => {
    const { client, server, backend } = await started();
    const pool = newPool();
    const session = await sessionTo(pool, client);
    const calls = Array.from({ length: 3 }, () => session.request(local('stall'), inSec(30)));
    await until('all are worked on', () => backend.working.get('stall')?.length === 3);
    const t0 = Date.now();
    server.forceShutdown();
    expect(await Promise.all(calls.map((c) => codeOf(c.promise)))).toEqual(
      Array(3).fill(grpc.status.UNAVAILABLE),
    );
    expect(Date.now() - t0).toBeLessThan(25_000); // not at their deadline
    expect(session.state).toBe('closed');
    expect(pool.pick(client)).toBeUndefined();
  });

  it('goes with its channel: a channel the connection manager closes takes its session (and its requests) along', async () => {
    const { client, backend } = await started();
    const pool = newPool();
    const session = await sessionTo(pool, client);
    const call = session.request(local('stall'), inSec(30));
    await until('worked on', () => backend.working.get('stall')?.length === 1);
    client.close();
    await expect(call.promise).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    expect(session.state).toBe('closed');
    await until('the peer stopped the work', () => backend.cancelled.includes('stall'));
    expect(pool.stats()).toEqual({ open: 0, opening: 0, inFlight: 0 });
  });

  it('calls a peer without sessions (an older version) or one that refuses them the unary way', async () => {
    for (const opts of [{ sessions: false }, { refuse: true }]) {
      const { client } = await started(opts);
      const pool = newPool();
      expect(pool.pick(client)).toBeUndefined(); // opening
      await until('the refusal is known', () => pool.stats().opening === 0);
      expect(pool.pick(client)).toBeUndefined(); // refused: not asked again for a while
      expect(pool.stats()).toEqual({ open: 0, opening: 0, inFlight: 0 });
    }
  });

  it('stopping: a request in flight is answered, a new one is refused UNAVAILABLE, then the session ends', async () => {
    const { client, backend, sessions } = await started();
    const session = await sessionTo(newPool(), client);
    const first = session.request(local('wait'), inSec(10));
    await until('worked on', () => backend.working.get('wait')?.length === 1);
    sessions.drain();
    await expect(session.request(local('echo'), inSec(10)).promise).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });
    backend.open();
    await expect(first.promise).resolves.toMatchObject({ answer: { $case: 'local' } });
    await until('the session ended', () => session.state === 'closed');
    expect(sessions.size).toBe(0);
  });
});
