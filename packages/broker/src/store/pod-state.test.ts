/**
 * One store suite, run against both stores a pod may keep its state in: a SQLite file (two connections,
 * as two brokers on one host) and a real PostgreSQL server (a private one, started for this file; two
 * pools, as two brokers on two nodes). Then what only a server can do: be down, restart, be newer.
 */
import { status } from '@grpc/grpc-js';
import { PrivatePostgres } from '@wanas/devfed';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { Refusal } from '../ledger/ledger';
import { SqliteInventory, SEED_DESKTOPS_PER_POOL, SEED_POOLS, DEMO_USERS } from './sqlite-inventory';
import { SqlitePodState, type PodState } from './pod-state';
import { PostgresPodState, POSTGRES_SCHEMA_VERSION } from './postgres-state';

let server: PrivatePostgres;
let dir: string;
let n = 0;
beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-state-'));
  server = await PrivatePostgres.start();
}, 60_000);
afterAll(async () => {
  await server?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const soon = () => Date.now() + 5000;
const quiet = () => undefined;

/** Two brokers' handles on one new pod store of `kind`. */
function twins(
  kind: 'sqlite' | 'postgres',
  pools?: Record<string, number>,
  sessions = 0,
): [PodState, PodState] {
  const id = `pod-${++n}`;
  if (kind === 'sqlite') {
    const file = path.join(dir, `${id}.sqlite`);
    return [0, 1].map(
      () => new SqlitePodState(new SqliteInventory(file, 's1', id, undefined, pools, sessions)),
    ) as unknown as [PodState, PodState];
  }
  return [0, 1].map(
    (): PodState =>
      new PostgresPodState({
        connectionString: server.url(),
        schema: `wanas-s1-${id}`,
        site: 's1',
        pod: id,
        idempotencyWindowMs: 86_400_000,
        pools,
        sessions,
        onError: quiet,
      }),
  ) as unknown as [PodState, PodState];
}

describe.each(['sqlite', 'postgres'] as const)('the %s store', (kind) => {
  let a: PodState;
  let b: PodState;
  beforeEach(() => ([a, b] = twins(kind)));
  afterEach(async () => {
    await a.close();
    await b.close();
  });

  it('seeds the demo inventory once, the same on every store', async () => {
    const [capA, capB] = await Promise.all([a.capacity(soon()), b.capacity(soon())]);
    expect(capA.total).toBe(SEED_POOLS.length * SEED_DESKTOPS_PER_POOL);
    expect(capB).toEqual(capA);
    let assigned = 0;
    for (const u of DEMO_USERS) assigned += (await a.findUser(u, soon())).desktops.length;
    expect(capA.inUse).toBe(assigned);
  });

  it('lists sessions from a point in byte order, a page at a time, of one user or state', async () => {
    const [x, y] = twins(kind, undefined, 2000);
    try {
      const all = await x.listSessions({ after: '', limit: 0 }, soon());
      expect(all.length).toBe(2000 + (await x.capacity(soon())).pools.standard!.inUse);
      const ids = all.map((s) => s.id);
      expect(ids).toEqual([...ids].sort((p, q) => Buffer.compare(Buffer.from(p), Buffer.from(q))));
      // From a point (inclusive), at most `limit`, the same through the twin.
      const page = await y.listSessions({ after: ids[100]!, limit: 50 }, soon());
      expect(page.map((s) => s.id)).toEqual(ids.slice(100, 150));
      const mine = await x.listSessions(
        { after: '', limit: 0, user: all[0]!.user, state: all[0]!.state },
        soon(),
      );
      expect(mine.every((s) => s.user === all[0]!.user && s.state === all[0]!.state)).toBe(true);
      expect(mine.map((s) => s.id)).toContain(all[0]!.id);
    } finally {
      await Promise.all([x.close(), y.close()]);
    }
  });

  it('provisions once per key across brokers, replays the first outcome, and refuses the key with other params', async () => {
    const r = { key: 'k1', user: 'zoe', pool: 'standard', deadline: soon() };
    const first = await a.provisionOnce({ ...r, brokerId: 'a' });
    const again = await b.provisionOnce({ ...r, brokerId: 'b' });
    expect(first).toMatchObject({ replayed: false, result: { provisionedBy: 'a' } });
    expect(again).toEqual({ result: (first as { result: unknown }).result, replayed: true });
    expect((await b.findUser('zoe', soon())).desktops).toHaveLength(1);
    expect(await b.provisionOnce({ ...r, pool: 'gpu', brokerId: 'b' })).toHaveProperty('conflict');
  });

  it('assigns one desktop when both brokers get the same key at once, and distinct desktops for distinct keys', async () => {
    const same = await Promise.all(
      [a, b, a, b].map((s, i) =>
        s.provisionOnce({ key: 'race', user: 'yan', pool: 'standard', brokerId: `b${i}`, deadline: soon() }),
      ),
    );
    expect(new Set(same.map((o) => JSON.stringify((o as { result: unknown }).result))).size).toBe(1);
    expect((await a.findUser('yan', soon())).desktops).toHaveLength(1);
    const many = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        (i % 2 ? a : b).provisionOnce({
          key: `k-${i}`,
          user: `u${i}`,
          pool: 'gpu',
          brokerId: 'x',
          deadline: soon(),
        }),
      ),
    );
    const ids = many.map((o) => (o as unknown as { result: { desktop: { id: string } } }).result.desktop.id);
    expect(new Set(ids).size).toBe(6);
  });

  it('remembers a refusal: a missing pool and a full pool answer the same to a resend', async () => {
    const [c] = twins(kind, { standard: 1, gpu: 0 });
    try {
      const r = { user: 'zoe', brokerId: 'a', deadline: soon() };
      expect(await c.provisionOnce({ ...r, key: 'p1', pool: 'fpga' })).toMatchObject({
        refused: { code: status.NOT_FOUND },
      });
      const full = await c.provisionOnce({ ...r, key: 'p2', pool: 'gpu' });
      expect(full).toMatchObject({ refused: { code: status.RESOURCE_EXHAUSTED }, replayed: false });
      expect(await c.provisionOnce({ ...r, key: 'p2', pool: 'gpu' })).toMatchObject({ replayed: true });
    } finally {
      await c.close();
    }
  });

  it('keeps the ledger of asynchronous writes: claim, pending for the twin, settle, replay', async () => {
    const lease = soon();
    expect(await a.claim('w1', 'op', { x: 1 }, 'a', lease)).toEqual({ claimed: true });
    expect(await b.claim('w1', 'op', { x: 1 }, 'b', lease)).toEqual({
      pending: { owner: 'a', leaseUntil: lease },
    });
    await a.settle('w1', 'op', { x: 1 }, { ok: 1 });
    expect(await b.claim('w1', 'op', { x: 1 }, 'b', lease)).toEqual({ result: { ok: 1 }, replayed: true });
    // A refusal is remembered; an unknown outcome is forgotten (the twin may claim again).
    await a.claim('w2', 'op', {}, 'a', lease);
    await a.settle('w2', 'op', {}, new Refusal(status.NOT_FOUND, 'no'));
    expect(await b.claim('w2', 'op', {}, 'b', lease)).toMatchObject({ refused: { code: status.NOT_FOUND } });
    await a.claim('w3', 'op', {}, 'a', lease);
    await a.settle('w3', 'op', {}, undefined);
    expect(await b.claim('w3', 'op', {}, 'b', lease)).toEqual({ claimed: true });
    // An ended lease is taken over.
    await a.claim('w4', 'op', {}, 'a', Date.now() + 30);
    await new Promise((r) => setTimeout(r, 60));
    expect(await b.claim('w4', 'op', {}, 'b', lease)).toEqual({ claimed: true });
  });
});

describe('the PostgreSQL store, where only a server can fail', () => {
  const store = (connectionString: string, schema: string) =>
    new PostgresPodState({
      connectionString,
      schema,
      site: 's1',
      pod: 'p1',
      idempotencyWindowMs: 86_400_000,
      pools: undefined,
      onError: quiet,
    });

  it('runs each migration once when replicas start together', async () => {
    const replicas = Array.from({ length: 4 }, () => store(server.url(), 'wanas-together'));
    await Promise.all(replicas.map((r) => r.migrate()));
    const c = new pg.Client({ connectionString: server.url() });
    await c.connect();
    const v = await c.query('SELECT version FROM "wanas-together".wanas_schema ORDER BY version');
    const d = await c.query('SELECT count(*)::int AS n FROM "wanas-together".desktops');
    await c.end();
    // Each migration once: one row per version, 1 to the newest.
    expect(v.rows).toEqual(Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));
    expect(d.rows[0].n).toBe(SEED_POOLS.length * SEED_DESKTOPS_PER_POOL);
    await Promise.all(replicas.map((r) => r.close()));
  });

  it('refuses a database whose schema is newer than this broker, naming both versions', async () => {
    const s = store(server.url(), 'wanas-newer');
    await s.migrate();
    const c = new pg.Client({ connectionString: server.url() });
    await c.connect();
    await c.query('INSERT INTO "wanas-newer".wanas_schema (version) VALUES (99)');
    await c.end();
    const older = store(server.url(), 'wanas-newer');
    await expect(older.migrate()).rejects.toThrow(
      `has schema version 99; this broker knows up to ${POSTGRES_SCHEMA_VERSION}`,
    );
    await Promise.all([s.close(), older.close()]);
  });

  it('answers UNAVAILABLE within the deadline when the database cannot be reached', async () => {
    const down = store('postgresql://postgres@127.0.0.1:1/postgres', 'wanas-down');
    const t0 = Date.now();
    const e = (await down.capacity(Date.now() + 3000).catch((x: unknown) => x)) as {
      code: number;
      details: string;
    };
    expect(e.code).toBe(status.UNAVAILABLE);
    expect(e.details).toMatch(/^store unreachable: /);
    expect(down.health()).toMatchObject({
      state: 'unreachable',
      reason: expect.stringContaining('ECONNREFUSED'),
    });
    expect(Date.now() - t0).toBeLessThan(3000);
    await down.close();
  });

  it('answers again after the server restarts, without a new store; nothing acknowledged is lost', async () => {
    const s = store(server.url(), 'wanas-restart');
    const done = await s.provisionOnce({
      key: 'before',
      user: 'ria',
      pool: 'standard',
      brokerId: 'a',
      deadline: soon(),
    });
    await server.stopServer('immediate');
    const e = (await s.capacity(soon()).catch((x: unknown) => x)) as { code: number };
    expect(e.code).toBe(status.UNAVAILABLE);
    await server.startServer();
    const t0 = Date.now();
    let cap;
    for (let i = 0; i < 50 && !cap; i++)
      cap = await s.capacity(soon()).catch(() => new Promise((r) => setTimeout(r, 100)));
    expect(cap).toBeDefined();
    expect(s.health().state).toBe('up');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(
      await s.provisionOnce({
        key: 'before',
        user: 'ria',
        pool: 'standard',
        brokerId: 'b',
        deadline: soon(),
      }),
    ).toEqual({
      ...(done as object),
      replayed: true,
    });
    await s.close();
  }, 60_000);

  it('restarted mid-write: every acknowledged write is there once, none doubled, and resends replay it', async () => {
    const s = new PostgresPodState({
      connectionString: server.url(),
      schema: 'wanas-midwrite',
      site: 's1',
      pod: 'p1',
      idempotencyWindowMs: 86_400_000,
      pools: { standard: 60 },
      onError: quiet,
    });
    await s.migrate();
    const acked = new Map<string, string>(); // key -> desktop id, for every write answered OK
    const write = async (i: number) => {
      const out = await s
        .provisionOnce({
          key: `mid-${i}`,
          user: `m${i}`,
          pool: 'standard',
          brokerId: 'a',
          deadline: Date.now() + 2000,
        })
        .catch(() => undefined); // UNAVAILABLE while the server is down: not acknowledged
      const id = (out as { result?: { desktop?: { id: string } } } | undefined)?.result?.desktop?.id;
      if (id) acked.set(`mid-${i}`, id);
    };
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      writes.push(write(i));
      if (i === 15) writes.push(server.stopServer('immediate').then(() => server.startServer()));
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(writes);
    // Every key again, now that the server is back: an acknowledged one replays its desktop, the rest act once.
    for (let i = 0; i < 40; i++) {
      const out = (await s.provisionOnce({
        key: `mid-${i}`,
        user: `m${i}`,
        pool: 'standard',
        brokerId: 'b',
        deadline: Date.now() + 5000,
      })) as { result: { desktop: { id: string } }; replayed: boolean };
      const before = acked.get(`mid-${i}`);
      if (before) expect([out.replayed, out.result.desktop.id]).toEqual([true, before]);
    }
    const c = new pg.Client({ connectionString: server.url() });
    await c.connect();
    const rows = await c.query<{ user: string; n: number }>(
      'SELECT "user", count(*)::int AS n FROM "wanas-midwrite".desktops WHERE "user" LIKE $1 GROUP BY "user"',
      ['m%'],
    );
    await c.end();
    expect(rows.rows).toHaveLength(40); // every user placed (acknowledged before, or on the resend)
    expect(rows.rows.every((r) => r.n === 1)).toBe(true); // never twice
    expect(acked.size).toBeGreaterThan(0);
    await s.close();
  }, 60_000);

  it('replaces connections the server killed (pg_terminate_backend) without a broker restart or a failed call', async () => {
    const s = store(server.url(), 'wanas-terminated');
    await Promise.all([0, 1, 2].map(() => s.capacity(soon()))); // a few pooled connections
    const c = new pg.Client({ connectionString: server.url() });
    await c.connect();
    const killed = await c.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'wanas s1/p1'`,
    );
    await c.end();
    expect(killed.rowCount).toBeGreaterThan(0);
    // A killed connection may be handed out before its error is seen: the read runs again on a fresh one.
    for (let i = 0; i < 4; i++)
      expect((await s.capacity(soon())).total).toBe(SEED_POOLS.length * SEED_DESKTOPS_PER_POOL);
    await s.close();
  });

  it('answers within the deadline while the server is frozen (never a hang), and again once it thaws', async () => {
    const s = store(server.url(), 'wanas-frozen');
    await s.migrate();
    await Promise.all([0, 1, 2].map(() => s.capacity(soon()))); // pooled connections to a live server
    const fresh = store(server.url(), 'wanas-frozen'); // one with no connection yet: its connect hangs
    server.freeze();
    try {
      const stuck = await Promise.all([
        s.capacity(Date.now() + 300).catch((x: unknown) => x),
        s
          .provisionOnce({
            key: 'frozen',
            user: 'fay',
            pool: 'standard',
            brokerId: 'a',
            deadline: Date.now() + 300,
          })
          .catch((x: unknown) => x),
        fresh.capacity(Date.now() + 300).catch((x: unknown) => x),
      ]);
      // A write cut off so has an unknown outcome: DEADLINE_EXCEEDED, resent with its key below.
      for (const e of stuck) expect(e).toMatchObject({ code: status.DEADLINE_EXCEEDED });
    } finally {
      server.freeze(false);
    }
    expect((await s.capacity(soon())).total).toBe(SEED_POOLS.length * SEED_DESKTOPS_PER_POOL);
    expect((await fresh.capacity(soon())).total).toBe(SEED_POOLS.length * SEED_DESKTOPS_PER_POOL);
    await s.provisionOnce({ key: 'frozen', user: 'fay', pool: 'standard', brokerId: 'b', deadline: soon() });
    expect((await s.findUser('fay', soon())).desktops).toHaveLength(1);
    await Promise.all([s.close(), fresh.close()]);
  });

  /** Another session inserts `key` into the store's ledger and holds it uncommitted: a write of it waits. */
  async function holdKey(schema: string, key: string): Promise<pg.Client> {
    const other = new pg.Client({ connectionString: server.url() });
    await other.connect();
    await other.query('BEGIN');
    await other.query(
      `INSERT INTO "${schema}".idempotency (key, operation, params_hash, result, created_at) VALUES ($1, 'x', 'x', '{}', 0)`,
      [key],
    );
    return other;
  }

  /** The pids of the store's sessions waiting for a lock. */
  async function waitingOnLock(c: pg.Client): Promise<number[]> {
    const r = await c.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE application_name = 'wanas s1/p1' AND wait_event_type = 'Lock'`,
    );
    return r.rows.map((x) => x.pid);
  }

  it('runs a transaction whose connection was killed once more on a fresh one: it acts once, nothing of the first stays', async () => {
    const s = store(server.url(), 'wanas-killed-mid-tx');
    await s.migrate();
    // Our write waits at its ledger INSERT behind another session's uncommitted row for the same key.
    const other = await holdKey('wanas-killed-mid-tx', 'held');
    const write = s.provisionOnce({
      key: 'held',
      user: 'kim',
      pool: 'standard',
      brokerId: 'a',
      deadline: Date.now() + 20_000,
    });
    const killer = new pg.Client({ connectionString: server.url() });
    await killer.connect();
    let killed = 0;
    await until(async () => {
      const [pid] = await waitingOnLock(killer);
      if (pid) await killer.query('SELECT pg_terminate_backend($1)', [pid]);
      return Boolean(pid) && ++killed > 0;
    });
    // The second run waits behind the same row (a new backend); the other session then rolls back.
    await until(async () => (await waitingOnLock(killer)).length === 1);
    await other.query('ROLLBACK');
    expect(await write).toMatchObject({ replayed: false, result: { provisionedBy: 'a' } });
    await Promise.all([other.end(), killer.end()]);
    expect((await s.findUser('kim', soon())).desktops).toHaveLength(1);
    expect(
      await s.provisionOnce({ key: 'held', user: 'kim', pool: 'standard', brokerId: 'b', deadline: soon() }),
    ).toMatchObject({ replayed: true, result: { provisionedBy: 'a' } });
    await s.close();
  });

  it.each([
    ['cancelled', status.CANCELLED],
    ['past its deadline', status.DEADLINE_EXCEEDED],
  ] as const)(
    'stops the statement on the server when its request is %s, and writes nothing',
    async (how, code) => {
      const schema = `wanas-stopped-${code}`;
      const s = store(server.url(), schema);
      await s.migrate();
      const other = await holdKey(schema, 'held');
      const abort = new AbortController();
      const write = s
        .provisionOnce({
          key: 'held',
          user: 'lou',
          pool: 'standard',
          brokerId: 'a',
          deadline: Date.now() + (how === 'cancelled' ? 20_000 : 300),
          signal: abort.signal,
        })
        .catch((x: unknown) => x);
      const watcher = new pg.Client({ connectionString: server.url() });
      await watcher.connect();
      await until(async () => (await waitingOnLock(watcher)).length === 1);
      if (how === 'cancelled') abort.abort();
      expect(await write).toMatchObject({ code });
      // Nothing of ours waits on the server any more, while the other session still holds its row.
      await until(async () => (await waitingOnLock(watcher)).length === 0);
      await other.query('ROLLBACK');
      await Promise.all([other.end(), watcher.end()]);
      expect((await s.findUser('lou', soon())).desktops).toHaveLength(0);
      await s.close();
    },
  );
});

/** Polls `cond` every 20 ms, at most 5 s. */
async function until(cond: () => Promise<boolean>): Promise<void> {
  for (const end = Date.now() + 5000; !(await cond());) {
    if (Date.now() > end) throw new Error('condition not met within 5 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}
