/**
 * Federation sessions on real broker processes behind the WAN emulator: SiteRequests and LocalRequests go
 * as frames on long-lived streams between brokers; a session broken mid-flight (SIGKILL, SIGSTOP, a
 * partition) fails its requests at once as attempt failures, and every pod is still answered once; a
 * write in flight on a broken session is not done twice; cancels interleave with answers; a large answer
 * travels beside small ones; and a broker that speaks only unary (sessions off, as an older version) is in
 * the same federation, calling and called.
 */
import * as grpc from '@grpc/grpc-js';
import { DevFederation } from '@wanas/devfed';
import {
  AdminServiceClient,
  AggregateRequest,
  AggregationServiceClient,
  Mode,
  durationToMs,
  msToDuration,
  type AggregateResponse,
  type ExplainResponse,
  type PodResult,
} from '@wanas/proto';
import { until } from './support/until';

const ENTRY = 's1-p1-a';
/** The broker that speaks only unary: the one broker of s3/p2, so every Aggregate reaches it. */
const UNARY = 's3-p2-a';
const SESSIONS_PER_POD = 2500;

describe('federation sessions (real processes, emulated WAN)', () => {
  let f: DevFederation;
  let ask: ReturnType<DevFederation['aggregator']>;
  const allAnswer = async () => (await ask({ operation: 'echo' })).summary?.podsFailed === 0;
  /** An echo whose pods sleep `sleepMs`, with attempts long enough that only a failure ends one early. */
  // Each call asks something of its own (`n`): identical reads in flight at once would share one execution,
  // and these tests are about many requests in flight.
  let n = 0;
  const slowEcho = (sleepMs: number, more: Partial<AggregateRequest> = {}): Partial<AggregateRequest> => ({
    operation: 'echo',
    params: { sleepMs, n: n++ },
    timeout: msToDuration(sleepMs + 8000),
    attemptTimeout: msToDuration(sleepMs + 4000),
    ...more,
  });
  const pods = (r: AggregateResponse) => r.pods.map((p) => `${p.site}/${p.pod}:${p.code}`).sort();
  /**
   * Every broker sees every peer usable again: no target down or degraded, no endpoint down (one that
   * failed lately may stay `failing` until it is next used: it is still tried).
   * After a fault, the entry answering is not enough: another broker may still hold a restarted peer down
   * until its probe answers, and the next test's fault would then leave that pod without a twin.
   */
  let lastBad = '';
  const healed = async () => {
    for (const b of f.brokers) {
      const s = await f.status(b.id).catch(() => undefined);
      if (!s) return false;
      const bad = [
        ...s.targets.filter((t) => t.state && t.state !== 'up').map((t) => `${t.site}/${t.pod} ${t.state}`),
        ...s.channels.filter((c) => c.state === 'down').map((c) => `${c.brokerId} ${c.state}`),
      ];
      if (bad.length) {
        lastBad = `${b.id}: ${bad.join(', ')}`;
        return false;
      }
    }
    return allAnswer();
  };
  const served = (id: string) =>
    f.logs(id).filter((l) => l.message === 'served' && (l.kind === 'site' || l.kind === 'local'));

  beforeAll(async () => {
    f = await DevFederation.start({
      spec: { s1: { p1: 2, p2: 2 }, s2: { p1: 2, p2: 2 }, s3: { p1: 1, p2: 1 } },
      wanLatencyMs: 10,
      logLevel: 'info',
      brokerArgs: ['--grace', '2000'],
      envFor: (b) => ({ WANAS_SESSIONS: b.id === UNARY ? 'off' : 'on' }),
      sessions: () => SESSIONS_PER_POD,
    });
    ask = f.aggregator(ENTRY);
    await until('every pod answers', allAnswer, 30_000);
    for (let i = 0; i < 10; i++) await ask({ operation: 'echo' });
  }, 120_000);
  afterAll(async () => {
    await f?.stop();
  });

  it('sends requests as session frames, and a unary-only broker calls and is called the unary way', async () => {
    await until('the entry asks s2 on a session', async () => {
      await ask({ operation: 'echo' });
      return ['s2-p1-a', 's2-p1-b', 's2-p2-a', 's2-p2-b'].some((id) =>
        served(id).some((l) => l.via === 'session'),
      );
    });
    expect(served(UNARY).length).toBeGreaterThan(0);
    expect(served(UNARY).filter((l) => l.via === 'session')).toEqual([]);
    // The unary-only broker as the entry: it calls every peer the unary way, and is answered.
    const res = await f.aggregator(UNARY)({ operation: 'echo' });
    expect(res.summary).toMatchObject({ podsAsked: 6, podsFailed: 0 });
    // Its peers found it takes no sessions, and said so once.
    const refusals = f.brokers
      .flatMap((b) => f.logs(b.id))
      .filter((l) => /does not take sessions/.test(String(l.message)));
    expect(refusals.length).toBeGreaterThan(0);
  });

  it('a representative killed mid-flight (SIGKILL): its session fails at once, its twin answers every pod once', async () => {
    const rep = await representativeOf('s2');
    const inFlight = Array.from({ length: 4 }, () => ask(slowEcho(3000)));
    await new Promise((r) => setTimeout(r, 400));
    await f.signal(rep, 'SIGKILL');
    try {
      const results = await Promise.all(inFlight);
      for (const r of results) expect(pods(r)).toEqual(ALL_OK);
      const failed = results.flatMap((r) => attemptsAt(r, rep)).filter((a) => a.code !== 0);
      expect(failed.length).toBeGreaterThan(0);
      for (const a of failed) {
        expect(a.code).toBe(grpc.status.UNAVAILABLE);
        expect(durationMs(a.latency)).toBeLessThan(3000); // failed when the session broke, not at the pod's answer
      }
    } finally {
      await f.startBroker(rep);
    }
    await until('every broker sees every peer usable', healed, 30_000).catch((e: Error) => {
      throw new Error(`${e.message}; last seen: ${lastBad}`);
    });
  });

  it('a representative frozen mid-flight (SIGSTOP): keepalive breaks its session, its twin answers', async () => {
    const rep = await representativeOf('s2');
    const inFlight = Array.from({ length: 3 }, () => ask(slowEcho(3000)));
    await new Promise((r) => setTimeout(r, 400));
    f.broker(rep).proc!.kill('SIGSTOP');
    try {
      const results = await Promise.all(inFlight);
      for (const r of results) expect(pods(r)).toEqual(ALL_OK);
      const failed = results.flatMap((r) => attemptsAt(r, rep)).filter((a) => a.code !== 0);
      expect(failed.map((a) => a.code)).toContain(grpc.status.UNAVAILABLE);
    } finally {
      f.broker(rep).proc!.kill('SIGCONT');
    }
    await until('every broker sees every peer usable', healed, 30_000).catch((e: Error) => {
      throw new Error(`${e.message}; last seen: ${lastBad}`);
    });
  });

  it('a write in flight on a session that breaks (SIGSTOP) acts once: resent with its key, it replays', async () => {
    const req: Partial<AggregateRequest> = {
      operation: 'desktops.provision',
      params: { user: 'sam', pool: 'standard' },
      mode: Mode.MODE_FIRST,
      preferSites: ['s2'],
      idempotencyKey: 'k-sam-session',
    };
    // The broker the write goes to first, as the entry plans it now (Explain runs nothing): frozen, its
    // session stays open until keepalive finds it, so the write is sent on it and left in flight.
    const rep = (await explainAt(ENTRY, req)).legs.find((l) => l.site === 's2')!.endpoints[0]!.brokerId;
    f.broker(rep).proc!.kill('SIGSTOP');
    const write = (): Promise<AggregateResponse> => ask(req);
    let first: AggregateResponse;
    try {
      first = await write();
    } finally {
      f.broker(rep).proc!.kill('SIGCONT');
    }
    await until('every broker sees every peer usable', healed, 30_000).catch((e: Error) => {
      throw new Error(`${e.message}; last seen: ${lastBad}`);
    });
    // The write went to the frozen representative, on its session, and failed there.
    expect(attemptsAt(first!, rep).some((a) => a.code !== 0)).toBe(true);
    // Whatever the first answer said (won through another broker, or outcome unknown), the key's resend says
    // the same desktop, and the user has exactly one.
    const again = await write();
    const won = (r: AggregateResponse) => r.pods.find((p) => p.code === 0);
    expect(won(again)).toBeDefined();
    const firstWon = won(first!);
    if (firstWon) expect(won(again)!.result).toMatchObject({ desktop: firstWon.result!.desktop });
    else expect(first!.pods.some((p) => /outcome unknown/.test(p.message))).toBe(true);
    const found = await ask({ operation: 'sessions.find', params: { user: 'sam' } });
    const desktops = found.pods.flatMap((p) => (p.result?.desktops as unknown[]) ?? []);
    expect(desktops).toHaveLength(1);
  });

  it('a site partitioned mid-flight: its pods fail at once as attempt failures, the others answer', async () => {
    const inFlight = ask(slowEcho(3000));
    await new Promise((r) => setTimeout(r, 400));
    f.wan.cut('s3');
    try {
      const r = await inFlight;
      expect(pods(r)).toEqual(ALL_OK.map((p) => (p.startsWith('s3/') ? p.replace(':0', ':14') : p)));
      for (const p of r.pods.filter((x) => x.site === 's3')) {
        expect(p.attempts.length).toBeGreaterThan(0);
        expect(p.attempts.every((a) => durationMs(a.latency) < 3000)).toBe(true);
      }
    } finally {
      f.wan.heal('s3');
    }
    await until('every broker sees every peer usable', healed, 30_000).catch((e: Error) => {
      throw new Error(`${e.message}; last seen: ${lastBad}`);
    });
  });

  it('interleaved cancels: the cancelled Aggregates end at every hop, the others answer in full', async () => {
    const client = new AggregationServiceClient(f.broker(ENTRY).address, grpc.credentials.createInsecure());
    try {
      const calls = Array.from({ length: 8 }, (_, i) => {
        let call!: grpc.ClientUnaryCall;
        const done = new Promise<number | AggregateResponse>((resolve) => {
          call = client.aggregate(
            AggregateRequest.fromPartial({ ...slowEcho(1500), correlationId: `interleaved-${i}` }),
            new grpc.Metadata(),
            { deadline: Date.now() + 20_000 },
            (e, r) => resolve(e ? e.code : r!),
          );
        });
        return { call, done };
      });
      await new Promise((r) => setTimeout(r, 300));
      calls.forEach((c, i) => i % 2 === 0 && c.call.cancel());
      const outcomes = await Promise.all(calls.map((c) => c.done));
      outcomes.forEach((o, i) => {
        if (i % 2 === 0) expect(o).toBe(grpc.status.CANCELLED);
        else expect(pods(o as AggregateResponse)).toEqual(ALL_OK);
      });
      // Each cancelled Aggregate's remote sites stopped work on it: logged CANCELLED at the representative.
      await until('the representatives logged the cancels', async () => {
        const cancelled = f.brokers
          .filter((b) => b.site !== 's1')
          .flatMap((b) => f.logs(b.id))
          .filter(
            (l) =>
              l.kind === 'site' &&
              l.code === 'CANCELLED' &&
              /^interleaved-\d*[02468]$/.test(String(l.correlationId)),
          );
        return new Set(cancelled.map((l) => `${String(l.correlationId)}`)).size === 4;
      });
    } finally {
      client.close();
    }
  });

  it('a large answer travels beside small ones: both complete and correct', async () => {
    const listing = ask(
      { operation: 'sessions.list', pageSize: 10_000, timeout: msToDuration(20_000) },
      25_000,
    );
    const small = Array.from({ length: 20 }, () => ask({ operation: 'echo', params: { n: 1 } }));
    const [page, ...echoes] = await Promise.all([listing, ...small]);
    for (const e of echoes) expect(pods(e)).toEqual(ALL_OK);
    const ids = (page.reduced!.sessions as { id: string }[]).map((s) => s.id);
    expect(ids).toHaveLength(10_000);
    expect([...ids].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))).toEqual(ids);
    // The remote pods' parts of the page came as frames.
    const listed = f.brokers.filter((b) => b.site !== 's1').flatMap((b) => served(b.id));
    expect(listed.some((l) => l.operation === 'sessions.list' && l.via === 'session')).toBe(true);
  });

  /** AdminService/Explain at broker `id`: the plan it would run for `req` now. */
  function explainAt(id: string, req: Partial<AggregateRequest>): Promise<ExplainResponse> {
    const admin = f.track(new AdminServiceClient(f.broker(id).address, grpc.credentials.createInsecure()));
    return new Promise((resolve, reject) =>
      admin.explain(
        { request: AggregateRequest.fromPartial(req) },
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
  }

  /** The broker of `site` the entry asks first (its representative), from a warm Aggregate's attempts. */
  async function representativeOf(site: string): Promise<string> {
    const r = await ask({ operation: 'echo' });
    return r.pods.find((p) => p.site === site)!.attempts[0]!.brokerId;
  }
});

const ALL_OK = ['s1/p1:0', 's1/p2:0', 's2/p1:0', 's2/p2:0', 's3/p1:0', 's3/p2:0'];

/** The attempts an Aggregate's pods made at broker `id`. */
function attemptsAt(r: AggregateResponse, id: string): PodResult['attempts'] {
  return r.pods.flatMap((p) => p.attempts.filter((a) => a.brokerId === id));
}

/** An attempt's latency, ms. */
const durationMs = (d: Parameters<typeof durationToMs>[0]) => durationToMs(d) ?? 0;
