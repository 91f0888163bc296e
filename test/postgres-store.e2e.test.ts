/**
 * A federation whose pods keep their state in a real PostgreSQL server (a private one on a free port, one
 * schema per pod) instead of SQLite files: the built-in operations answer from it, a write resent through
 * the pod's twin broker is answered from the ledger, concurrent placements never double a desktop, and a
 * database that goes away is each pod's UNAVAILABLE while the brokers keep serving — and used again as soon as
 * it is back, without restarting a broker; a frozen one costs its pods their deadline, never a hang.
 */
import * as grpc from '@grpc/grpc-js';
import { PrivatePostgres } from '@wanas/devfed';
import { Mode, type PodResult } from '@wanas/proto';
import pg from 'pg';
import { Federation } from './support/federation';

const ENTRY = 's1-p1-a';
const TWIN = 's1-p1-b';

describe('pods on PostgreSQL', () => {
  let server: PrivatePostgres;
  let f: Federation;

  beforeAll(async () => {
    server = await PrivatePostgres.start();
    f = await Federation.start(
      { s1: { p1: 2, p2: 1 }, s2: { p1: 1 } },
      { store: `${server.url()}?schema=wanas-{site}-{pod}` },
    );
  }, 120_000);
  afterAll(async () => {
    await f?.stop();
    await server?.stop();
  });

  const desktopsOf = async (user: string) => {
    const c = new pg.Client({ connectionString: server.url() });
    await c.connect();
    try {
      const rows: string[] = [];
      for (const schema of ['wanas-s1-p1', 'wanas-s1-p2', 'wanas-s2-p1']) {
        const r = await c.query<{ id: string }>(`SELECT id FROM "${schema}".desktops WHERE "user" = $1`, [
          user,
        ]);
        rows.push(...r.rows.map((x) => x.id));
      }
      return rows;
    } finally {
      await c.end();
    }
  };

  it('answers the built-in operations from each pod schema', async () => {
    const res = await f.aggregate(ENTRY, { operation: 'pods.capacity' });
    expect(res.summary?.podsOk).toBe(3);
    expect(res.reduced).toMatchObject({ total: 72, pods: 3 });
  });

  it('places each user once, however the writes are resent and raced through twin brokers', async () => {
    const users = ['pg-a', 'pg-b', 'pg-c', 'pg-d', 'pg-e', 'pg-f'];
    const place = (entry: string, user: string) =>
      f.aggregate(entry, {
        operation: 'desktops.provision',
        params: { user, pool: 'gpu' },
        idempotencyKey: `place-${user}`,
        mode: Mode.MODE_FIRST,
        preferSites: ['s1'],
      });
    // Every user's placement sent through both twins at once, then once more.
    const first = await Promise.all(users.flatMap((u) => [place(ENTRY, u), place(TWIN, u)]));
    const again = await Promise.all(users.map((u) => place(TWIN, u)));
    for (const [i, u] of users.entries()) {
      const won = (r: { pods: PodResult[] }) => r.pods.filter((p) => p.code === 0);
      expect(won(again[i]!)).toHaveLength(1);
      expect(won(again[i]!)[0]!.result?.replayed).toBe(true);
      for (const r of [first[2 * i]!, first[2 * i + 1]!])
        expect(won(r)[0]?.result?.desktop).toEqual(won(again[i]!)[0]!.result?.desktop);
      expect(await desktopsOf(u)).toHaveLength(1);
    }
  });

  it('answers UNAVAILABLE for the pods while the database is down, keeps serving, and uses it again once back', async () => {
    await server.stopServer('immediate');
    const down = await f.aggregate(ENTRY, { operation: 'pods.capacity', timeout: { seconds: 3, nanos: 0 } });
    for (const p of down.pods) {
      expect(p.code).toBe(grpc.status.UNAVAILABLE);
      expect(p.message).toMatch(/^store unreachable: /);
    }
    const st = await f.status(ENTRY);
    expect(st.store).toMatchObject({
      kind: 'postgres',
      state: 'unreachable',
      where: expect.stringContaining('(schema wanas-s1-p1)'),
    });
    expect(st.store!.where).not.toMatch(/password/);
    // What does not need the store still answers.
    expect((await f.aggregate(ENTRY, { operation: 'echo' })).summary?.podsOk).toBe(3);
    await server.startServer();
    // No broker restarted and no wait: the first calls once the server accepts connections are answered.
    const back = await f.aggregate(ENTRY, { operation: 'pods.capacity' });
    expect(back.summary?.podsOk).toBe(3);
    const write = await f.aggregate(ENTRY, {
      operation: 'desktops.provision',
      params: { user: 'pg-back', pool: 'standard' },
      idempotencyKey: 'after-restart',
      mode: Mode.MODE_FIRST,
    });
    expect(write.pods.filter((p) => p.code === 0)).toHaveLength(1);
    expect((await f.status(ENTRY)).store?.state).toBe('up');
  }, 60_000);

  it('answers in time while the database is frozen (its pods cut off at the deadline, the rest as usual), and at once after it thaws', async () => {
    await f.aggregate(ENTRY, { operation: 'pods.capacity' }); // every broker holds pooled connections
    server.freeze();
    try {
      const t0 = Date.now();
      const frozen = await f.aggregate(ENTRY, {
        operation: 'pods.capacity',
        timeout: { seconds: 1, nanos: 500_000_000 },
      });
      expect(Date.now() - t0).toBeLessThan(5000); // answered, not hung (the call's own deadline is 15 s)
      expect(frozen.summary?.podsOk).toBe(0);
      for (const p of frozen.pods) expect(p.code).toBe(grpc.status.DEADLINE_EXCEEDED);
      expect((await f.aggregate(ENTRY, { operation: 'echo' })).summary?.podsOk).toBe(3);
    } finally {
      server.freeze(false);
    }
    // The brokers gave up their stuck connections: the first call after the thaw is answered in full.
    expect((await f.aggregate(ENTRY, { operation: 'pods.capacity' })).summary?.podsOk).toBe(3);
  }, 60_000);
});
