/**
 * A pod's state in PostgreSQL, for a pod whose brokers run on different nodes: one schema per pod (tables
 * named by schema, so pods may share a database), versioned migrations run at start under an advisory lock
 * (replicas starting together run them once), row locks instead of a file lock, a bounded client pool, and a
 * statement timeout within each request's deadline. A database that cannot be reached is the pod's
 * UNAVAILABLE ("store unreachable: …"), never a hang; the broker stays up and tries again at the next call.
 */
import { status } from '@grpc/grpc-js';
import pg from 'pg';
import { BrokerError } from '../errors';
import {
  Refusal,
  paramsHashOf,
  replayOf,
  storedOutcome,
  type ClaimOutcome,
  type Desktop,
  type OnceOutcome,
  type Session,
} from './pod-store';
import type { Capacity, PodState, ProvisionRequest, StoreHealth } from './pod-state';
import { provisionRefusal } from './pod-state';
import { seedRows } from './seed';

/** Connections one broker keeps to its pod's database at most. */
const POOL_MAX = 10;
/** How long getting a connection may take when the request leaves more, ms. */
const CONNECT_TIMEOUT_MS = 2000;
/** Pause while the only free desktops are held by twins' transactions, ms. */
const HELD_DESKTOP_WAIT_MS = 10;
/** Tries of a transaction that lost a race on a key to a twin broker (it then sees the twin's row). */
const MAX_KEY_RACES = 5;

/** The schema's migrations, in order: index + 1 is the version. Append only. */
const MIGRATIONS: ((s: string) => string)[] = [
  (s) => `
    CREATE TABLE ${s}.meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
    CREATE TABLE ${s}.pools (name TEXT PRIMARY KEY);
    CREATE TABLE ${s}.desktops (
      id TEXT PRIMARY KEY, pool TEXT NOT NULL,
      state TEXT NOT NULL CHECK (state IN ('free', 'assigned')), "user" TEXT);
    CREATE INDEX ON ${s}.desktops ("user");
    CREATE INDEX ON ${s}.desktops (pool, state);
    CREATE TABLE ${s}.sessions (
      id TEXT PRIMARY KEY, desktop_id TEXT NOT NULL REFERENCES ${s}.desktops(id), "user" TEXT NOT NULL,
      state TEXT NOT NULL CHECK (state IN ('connected', 'disconnected')), started_at TEXT NOT NULL);
    CREATE INDEX ON ${s}.sessions ("user");
    CREATE TABLE ${s}.idempotency (
      key TEXT PRIMARY KEY, operation TEXT NOT NULL, params_hash TEXT NOT NULL,
      result TEXT NOT NULL, created_at BIGINT NOT NULL);
    CREATE INDEX ON ${s}.idempotency (created_at);
    CREATE TABLE ${s}.idempotency_claims (
      key TEXT PRIMARY KEY, operation TEXT NOT NULL, params_hash TEXT NOT NULL,
      owner TEXT NOT NULL, lease_until BIGINT NOT NULL);`,
];
/** The newest schema version this broker knows. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

/** A broker older than its pod's database: it refuses to start, naming both versions. */
export class SchemaTooNewError extends Error {}

/** SQLSTATE classes and codes that mean the database could not be used (not that the request was wrong). */
function isUnreachable(e: unknown): boolean {
  const code = String((e as { code?: unknown }).code ?? '');
  return (
    /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EPIPE|EHOSTUNREACH)$/.test(code) ||
    code.startsWith('08') || // connection exceptions
    code === '57P01' ||
    code === '57P02' ||
    code === '57P03' || // shutting down, crash, cannot connect now
    /timeout exceeded when trying to connect|Connection terminated|connection timeout/i.test(
      (e as Error).message ?? '',
    )
  );
}

/** Options of a {@link PostgresPodState}. */
export interface PostgresOptions {
  /** A standard connection URL (without `schema`); the libpq variables (PGHOST, PGPASSWORD, …) fill the rest. */
  connectionString: string;
  /** The pod's schema (created if missing). */
  schema: string;
  site: string;
  pod: string;
  idempotencyWindowMs: number;
  pools: Record<string, number> | undefined;
  /** Where a connection's own errors (an idle client the server dropped) are told. */
  onError: (e: Error) => void;
}

/** The PostgreSQL store of one pod. */
export class PostgresPodState implements PodState {
  readonly kind = 'postgres';
  private readonly pool: pg.Pool;
  /** The schema, quoted for SQL. */
  private readonly s: string;
  private migrated: Promise<void> | undefined;
  private healthNow: StoreHealth = { state: 'up', since: Date.now(), reason: '' };

  constructor(private readonly o: PostgresOptions) {
    if (!/^[A-Za-z_][A-Za-z0-9_-]{0,62}$/.test(o.schema))
      throw new Error(
        `schema "${o.schema}": letters, digits, '_' and '-', at most 63, not starting with a digit`,
      );
    this.s = `"${o.schema}"`;
    this.pool = new pg.Pool({
      connectionString: o.connectionString,
      max: POOL_MAX,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      idleTimeoutMillis: 30_000,
      application_name: `wanas ${o.site}/${o.pod}`,
    });
    // An idle connection the server ended (a restart, pg_terminate_backend): the pool replaces it.
    this.pool.on('error', (e) => o.onError(e));
  }

  get where(): string {
    const u = new URL(this.o.connectionString || 'postgresql://');
    u.password = '';
    return `${u.protocol}//${u.username ? `${u.username}@` : ''}${u.host}${u.pathname} (schema ${this.o.schema})`;
  }

  /**
   * Runs the migrations once (the first caller; a failure is tried again by the next): under an advisory
   * lock, so replicas starting together apply each migration once. Refuses a schema newer than this broker.
   */
  migrate(): Promise<void> {
    this.migrated ??= this.runMigrations().catch((e: unknown) => {
      this.migrated = undefined;
      throw e;
    });
    return this.migrated;
  }

  private async runMigrations(): Promise<void> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    const onError = (e: Error) => (broken = e); // see tx(): a client's own error while checked out
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`wanas:${this.o.schema}`]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${this.s}`);
      await client.query(`CREATE TABLE IF NOT EXISTS ${this.s}.wanas_schema (version INT NOT NULL)`);
      const r = await client.query<{ v: number | null }>(
        `SELECT max(version) AS v FROM ${this.s}.wanas_schema`,
      );
      const current = r.rows[0]?.v ?? 0;
      if (current > POSTGRES_SCHEMA_VERSION)
        throw new SchemaTooNewError(
          `the database of pod ${this.o.site}/${this.o.pod} (${this.where}) has schema version ${current}; this broker knows up to ${POSTGRES_SCHEMA_VERSION}: upgrade the broker`,
        );
      for (let v = current + 1; v <= POSTGRES_SCHEMA_VERSION; v++) {
        await client.query(MIGRATIONS[v - 1]!(this.s));
        await client.query(`INSERT INTO ${this.s}.wanas_schema (version) VALUES ($1)`, [v]);
      }
      await this.seed(client);
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch((r: unknown) => (broken ??= r as Error)); // gone: nothing to undo
      throw e;
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  /** The demo inventory, once per schema (in the migration's transaction). */
  private async seed(c: pg.PoolClient): Promise<void> {
    const done = await c.query(`SELECT 1 FROM ${this.s}.meta WHERE k = 'seeded'`);
    if (done.rowCount) return;
    const rows = seedRows(this.o.site, this.o.pod, this.o.pools);
    for (const p of rows.pools) await c.query(`INSERT INTO ${this.s}.pools (name) VALUES ($1)`, [p]);
    for (const d of rows.desktops)
      await c.query(`INSERT INTO ${this.s}.desktops (id, pool, state, "user") VALUES ($1, $2, $3, $4)`, [
        d.id,
        d.pool,
        d.state,
        d.user,
      ]);
    for (const x of rows.sessions)
      await c.query(
        `INSERT INTO ${this.s}.sessions (id, desktop_id, "user", state, started_at) VALUES ($1, $2, $3, $4, $5)`,
        [x.id, x.desktopId, x.user, x.state, x.startedAt],
      );
    await c.query(`INSERT INTO ${this.s}.meta (k, v) VALUES ('seeded', $1)`, [new Date().toISOString()]);
  }

  /**
   * Runs `fn` in one transaction with a statement timeout within `deadline`. Errors: the database
   * unreachable → UNAVAILABLE, the deadline → DEADLINE_EXCEEDED; a broken connection is dropped, not reused.
   */
  private async tx<T>(deadline: number, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const leftMs = Math.floor(deadline - Date.now());
    if (leftMs <= 0) throw new BrokerError(status.DEADLINE_EXCEEDED, 'no time left for the pod store');
    let client: pg.PoolClient;
    try {
      await this.migrate();
      client = await this.pool.connect();
    } catch (e) {
      throw this.failure(e);
    }
    let broken: Error | undefined;
    // A connection that dies while checked out emits 'error' on its client (the pool listens only while it
    // is idle): unheard, that would end the broker. The query in flight rejects as well; the client is dropped.
    const onError = (e: Error) => (broken = e);
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      await client.query(`SET LOCAL statement_timeout = ${Math.max(1, leftMs)}`);
      const out = await fn(client);
      await client.query('COMMIT');
      this.transition('up');
      return out;
    } catch (e) {
      if (isUnreachable(e)) broken = e as Error;
      else await client.query('ROLLBACK').catch((r: unknown) => (broken = r as Error));
      throw this.failure(e);
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  /** Whether the database answers, as the last use found it. */
  health(): StoreHealth {
    return this.healthNow;
  }

  /** The one place the health changes: to `up` on a use that reached the database, else `unreachable`. */
  private transition(state: StoreHealth['state'], reason = ''): void {
    if (state === this.healthNow.state && reason === this.healthNow.reason) return;
    if (state !== this.healthNow.state) this.healthNow = { state, since: Date.now(), reason };
    else this.healthNow = { ...this.healthNow, reason };
  }

  /** What a store error is for the pod's answer. */
  private failure(e: unknown): unknown {
    if (e instanceof BrokerError || e instanceof Refusal || e instanceof SchemaTooNewError) return e;
    if ((e as { code?: unknown }).code === '57014')
      return new BrokerError(status.DEADLINE_EXCEEDED, 'the pod store did not answer within the deadline', e);
    if (isUnreachable(e)) {
      this.transition('unreachable', (e as Error).message);
      return new BrokerError(status.UNAVAILABLE, `store unreachable: ${(e as Error).message}`, e);
    }
    return e;
  }

  async findUser(user: string, deadline: number): Promise<{ desktops: Desktop[]; sessions: Session[] }> {
    return this.tx(deadline, async (c) => ({
      desktops: (
        await c.query<Desktop>(
          `SELECT id, pool, state, "user" FROM ${this.s}.desktops WHERE "user" = $1 ORDER BY id`,
          [user],
        )
      ).rows,
      sessions: (
        await c.query<Session>(
          `SELECT id, desktop_id AS "desktopId", "user", state, started_at AS "startedAt" FROM ${this.s}.sessions WHERE "user" = $1 ORDER BY id`,
          [user],
        )
      ).rows,
    }));
  }

  async capacity(deadline: number): Promise<Capacity> {
    const rows = await this.tx(
      deadline,
      async (c) =>
        (
          await c.query<{ pool: string; total: number; free: number }>(
            `SELECT pool, COUNT(*)::int AS total, SUM(CASE WHEN state = 'free' THEN 1 ELSE 0 END)::int AS free
             FROM ${this.s}.desktops GROUP BY pool ORDER BY pool`,
          )
        ).rows,
    );
    const cap: Capacity = { total: 0, free: 0, inUse: 0, pools: {} };
    for (const r of rows) {
      cap.pools[r.pool] = { total: r.total, free: r.free, inUse: r.total - r.free };
      cap.total += r.total;
      cap.free += r.free;
    }
    cap.inUse = cap.total - cap.free;
    return cap;
  }

  /** The remembered outcome of a key, if any: a replay or a conflict. */
  private async remembered(
    c: pg.PoolClient,
    key: string,
    paramsHash: string,
  ): Promise<OnceOutcome | undefined> {
    await c.query(`DELETE FROM ${this.s}.idempotency WHERE created_at < $1`, [
      Date.now() - this.o.idempotencyWindowMs,
    ]);
    // Kept as JSON text (not jsonb): a replay has the first answer's very key order.
    const prev = await c.query<{ operation: string; paramsHash: string; result: string }>(
      `SELECT operation, params_hash AS "paramsHash", result FROM ${this.s}.idempotency WHERE key = $1`,
      [key],
    );
    return prev.rows[0] && replayOf(prev.rows[0], paramsHash);
  }

  private remember(
    c: pg.PoolClient,
    key: string,
    operation: string,
    paramsHash: string,
    outcome: Record<string, unknown> | Refusal,
  ) {
    return c.query(
      `INSERT INTO ${this.s}.idempotency (key, operation, params_hash, result, created_at) VALUES ($1, $2, $3, $4, $5)`,
      [key, operation, paramsHash, storedOutcome(outcome), Date.now()],
    );
  }

  /** Runs a keyed transaction again when a twin broker committed the same key first (unique violation). */
  private async keyed<T>(deadline: number, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    for (let i = 1; ; i++) {
      try {
        return await this.tx(deadline, fn);
      } catch (e) {
        if ((e as { code?: unknown }).code !== '23505' || i >= MAX_KEY_RACES) throw e;
      }
    }
  }

  provisionOnce(r: ProvisionRequest): Promise<OnceOutcome> {
    const op = 'desktops.provision';
    const hash = paramsHashOf(op, { user: r.user, pool: r.pool });
    const { site, pod } = this.o;
    return this.keyed(r.deadline, async (c) => {
      const prev = await this.remembered(c, r.key, hash);
      if (prev) return prev;
      const pool = await c.query(`SELECT 1 FROM ${this.s}.pools WHERE name = $1`, [r.pool]);
      let refusal: Refusal | undefined;
      let desktop: Desktop | undefined;
      if (!pool.rowCount) refusal = provisionRefusal.noPool(site, pod, r.pool);
      else {
        const id = await this.freeDesktop(c, r.pool, r.deadline);
        if (!id) refusal = provisionRefusal.full(site, pod, r.pool);
        else {
          await c.query(`UPDATE ${this.s}.desktops SET state = 'assigned', "user" = $1 WHERE id = $2`, [
            r.user,
            id,
          ]);
          desktop = { id, pool: r.pool, state: 'assigned', user: r.user };
        }
      }
      const result = { desktop: desktop as unknown as Record<string, unknown>, provisionedBy: r.brokerId };
      await this.remember(c, r.key, op, hash, refusal ?? result);
      return refusal ? { refused: refusal, replayed: false } : { result, replayed: false };
    });
  }

  /**
   * Locks a free desktop of the pool, skipping those a twin's transaction holds; when only held ones are
   * left, waits for their transactions to end (they may roll back) before saying none is free.
   */
  private async freeDesktop(c: pg.PoolClient, pool: string, deadline: number): Promise<string | undefined> {
    while (Date.now() < deadline) {
      const free = await c.query<{ id: string }>(
        `SELECT id FROM ${this.s}.desktops WHERE pool = $1 AND state = 'free' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED`,
        [pool],
      );
      if (free.rows[0]) return free.rows[0].id;
      const held = await c.query(
        `SELECT 1 FROM ${this.s}.desktops WHERE pool = $1 AND state = 'free' LIMIT 1`,
        [pool],
      );
      if (!held.rowCount) return undefined;
      await new Promise((res) => setTimeout(res, HELD_DESKTOP_WAIT_MS));
    }
    throw new BrokerError(
      status.DEADLINE_EXCEEDED,
      'the free desktops stayed held by other brokers of the pod',
    );
  }

  claim(
    key: string,
    operation: string,
    params: unknown,
    owner: string,
    leaseUntil: number,
  ): Promise<ClaimOutcome> {
    const hash = paramsHashOf(operation, params);
    return this.keyed(leaseUntil, async (c): Promise<ClaimOutcome> => {
      const prev = await this.remembered(c, key, hash);
      if (prev) return prev;
      const held = await c.query<{ owner: string; lease_until: string }>(
        `SELECT owner, lease_until FROM ${this.s}.idempotency_claims WHERE key = $1 FOR UPDATE`,
        [key],
      );
      const h = held.rows[0];
      if (h && Number(h.lease_until) > Date.now() && h.owner !== owner)
        return { pending: { owner: h.owner, leaseUntil: Number(h.lease_until) } };
      // No claim: a plain INSERT (a twin inserting at once makes this a unique violation: tried again).
      await c.query(
        h
          ? `UPDATE ${this.s}.idempotency_claims SET operation = $2, params_hash = $3, owner = $4, lease_until = $5 WHERE key = $1`
          : `INSERT INTO ${this.s}.idempotency_claims (key, operation, params_hash, owner, lease_until) VALUES ($1, $2, $3, $4, $5)`,
        [key, operation, hash, owner, leaseUntil],
      );
      return { claimed: true };
    });
  }

  async settle(
    key: string,
    operation: string,
    params: unknown,
    outcome: Record<string, unknown> | Refusal | undefined,
  ): Promise<void> {
    await this.tx(Date.now() + 5000, async (c) => {
      await c.query(`DELETE FROM ${this.s}.idempotency_claims WHERE key = $1`, [key]);
      if (outcome === undefined) return;
      await c.query(`DELETE FROM ${this.s}.idempotency WHERE key = $1`, [key]);
      await this.remember(c, key, operation, paramsHashOf(operation, params), outcome);
    });
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}
