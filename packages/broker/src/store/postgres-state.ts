/**
 * A pod's state in PostgreSQL, for a pod whose brokers run on different nodes: one schema per pod (tables
 * named by schema, so pods may share a database; migrations in `postgres-schema.ts`), row locks instead of
 * a file lock, and every use bounded by its request (`postgres-tx.ts`). A database that cannot be reached is
 * the pod's UNAVAILABLE ("store unreachable: …"), never a hang; the broker stays up and tries again at the
 * next call. A read is one round trip to the database; a write two.
 */
import { status } from '@grpc/grpc-js';
import { BrokerError } from '../errors';
import { paramsHashOf, type ClaimOutcome, type OnceOutcome, type Settlement } from '../ledger/ledger';
import { PostgresLedger } from '../ledger/ledger-postgres';
import type { Desktop, DesktopSession } from './sqlite-inventory';
import type { Capacity, PodState, ProvisionRequest, SessionQuery, StoreHealth } from './pod-state';
import { provisionRefusal } from './pod-state';
import { migrateSchema } from './postgres-schema';
import { PgTransactions, within, type Bounds, type Tx } from './postgres-tx';

export { POSTGRES_SCHEMA_VERSION, SchemaTooNewError } from './postgres-schema';

/** Pause while the only free desktops are held by twins' transactions, ms. */
const HELD_DESKTOP_WAIT_MS = 10;
/** Tries of a transaction that lost a race on a key to a twin broker (it then sees the twin's row). */
const MAX_KEY_RACES = 5;
/** How long the migrations may take at most (a twin may hold their lock meanwhile), ms. */
const MIGRATION_TIMEOUT_MS = 30_000;

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
  /** Sessions seeded besides the demo users' (see `seedRows`). */
  sessions?: number;
  /** Where a connection's own errors (an idle client the server dropped) are told. */
  onError: (e: Error) => void;
}

/** The PostgreSQL store of one pod. */
export class PostgresPodState implements PodState {
  readonly kind = 'postgres';
  private readonly db: PgTransactions;
  /** The schema, quoted for SQL. */
  private readonly s: string;
  private migrated: Promise<void> | undefined;
  /** The pod's exactly-once ledger, in the same schema (and the same transactions as a provision's). */
  private readonly ledger: PostgresLedger;

  constructor(private readonly o: PostgresOptions) {
    if (!/^[A-Za-z_][A-Za-z0-9_-]{0,62}$/.test(o.schema))
      throw new Error(
        `schema "${o.schema}": letters, digits, '_' and '-', at most 63, not starting with a digit`,
      );
    this.s = `"${o.schema}"`;
    this.db = new PgTransactions(o.connectionString, `wanas ${o.site}/${o.pod}`, o.onError);
    this.ledger = new PostgresLedger({
      schema: this.s,
      windowMs: o.idempotencyWindowMs,
      tx: (b, fn, oneRound) => this.tx(b, fn, oneRound),
      keyed: (b, fn) => this.keyed(b, fn),
    });
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

  /** The migrations in one bounded transaction (see {@link PgTransactions.run}). */
  private runMigrations(): Promise<void> {
    return this.db.run({ deadline: Date.now() + MIGRATION_TIMEOUT_MS }, (tx) =>
      migrateSchema(tx, { ...this.o, where: this.where }),
    );
  }

  /** `fn` in one transaction within `b`, once the schema is there (waited for within `b` too). */
  private async tx<T>(b: Bounds, fn: (tx: Tx) => Promise<T>, oneRound = false): Promise<T> {
    await within(b, 'the pod store migrating', () => this.migrate());
    return this.db.run(b, fn, oneRound);
  }

  /** Whether the database answers, as the last use found it. */
  health(): StoreHealth {
    return this.db.health();
  }

  findUser(
    user: string,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<{ desktops: Desktop[]; sessions: DesktopSession[] }> {
    return this.tx(
      { deadline, signal },
      async (tx) => {
        const [desktops, sessions] = await Promise.all([
          tx.query<Desktop>(
            `SELECT id, pool, state, "user" FROM ${this.s}.desktops WHERE "user" = $1 ORDER BY id`,
            [user],
          ),
          tx.query<DesktopSession>(
            `SELECT id, desktop_id AS "desktopId", "user", state, started_at AS "startedAt" FROM ${this.s}.sessions WHERE "user" = $1 ORDER BY id`,
            [user],
          ),
        ]);
        return { desktops: desktops.rows, sessions: sessions.rows };
      },
      true,
    );
  }

  listSessions(q: SessionQuery, deadline: number, signal?: AbortSignal): Promise<DesktopSession[]> {
    return this.tx(
      { deadline, signal },
      async (tx) =>
        (
          await tx.query<DesktopSession>(
            `SELECT id, desktop_id AS "desktopId", "user", state, started_at AS "startedAt" FROM ${this.s}.sessions
             WHERE id COLLATE "C" >= $1 AND ($2::text IS NULL OR "user" = $2) AND ($3::text IS NULL OR state = $3)
             ORDER BY id COLLATE "C" LIMIT $4`,
            [q.after, q.user ?? null, q.state ?? null, q.limit || null],
          )
        ).rows,
      true,
    );
  }

  async capacity(deadline: number, signal?: AbortSignal): Promise<Capacity> {
    const rows = await this.tx(
      { deadline, signal },
      async (tx) =>
        (
          await tx.query<{ pool: string; total: number; free: number }>(
            `SELECT pool, COUNT(*)::int AS total, SUM(CASE WHEN state = 'free' THEN 1 ELSE 0 END)::int AS free
             FROM ${this.s}.desktops GROUP BY pool ORDER BY pool`,
          )
        ).rows,
      true,
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

  /** Runs a keyed transaction again when a twin broker committed the same key first (unique violation). */
  private async keyed<T>(b: Bounds, fn: (tx: Tx) => Promise<T>): Promise<T> {
    for (let i = 1; ; i++) {
      try {
        return await this.tx(b, fn);
      } catch (e) {
        if ((e as { code?: unknown }).code !== '23505' || i >= MAX_KEY_RACES) throw e;
      }
    }
  }

  /**
   * A resend is answered by {@link replay} (one round trip, nothing locked). A new key: round one, its
   * record looked up again; round two, a free desktop locked and assigned in one statement; round three,
   * the desktop's record and the commit.
   */
  async provisionOnce(r: ProvisionRequest): Promise<OnceOutcome> {
    const op = 'desktops.provision';
    const hash = paramsHashOf(op, { user: r.user, pool: r.pool });
    const { site, pod } = this.o;
    const prev = await this.ledger.replay(r, r.key, hash);
    if (prev) return prev;
    return this.keyed(r, async (tx) => {
      const prev = await this.ledger.remembered(tx, r.key, hash);
      if (prev) return prev;
      const assigned = await this.assign(tx, r.user, r.pool, r.deadline);
      const refusal =
        assigned === 'no-pool'
          ? provisionRefusal.noPool(site, pod, r.pool)
          : assigned === 'none-free'
            ? provisionRefusal.full(site, pod, r.pool)
            : undefined;
      const desktop: Desktop | undefined =
        typeof assigned === 'object'
          ? { id: assigned.id, pool: r.pool, state: 'assigned', user: r.user }
          : undefined;
      const result = { desktop: desktop as unknown as Record<string, unknown>, provisionedBy: r.brokerId };
      this.ledger.remember(tx, r.key, op, hash, refusal ?? result);
      return refusal ? { refused: refusal, replayed: false } : { result, replayed: false };
    });
  }

  /**
   * Assigns a free desktop of the pool to the user, skipping those a twin's transaction holds; when only
   * held ones are left, waits for their transactions to end (they may roll back) before saying none is free.
   */
  private async assign(
    tx: Tx,
    user: string,
    pool: string,
    deadline: number,
  ): Promise<{ id: string } | 'no-pool' | 'none-free'> {
    while (Date.now() < deadline) {
      const r = await tx.query<{ pool: boolean; id: string | null; any_free: boolean }>(
        `WITH picked AS (
           SELECT id FROM ${this.s}.desktops WHERE pool = $2 AND state = 'free' ORDER BY id LIMIT 1
           FOR UPDATE SKIP LOCKED),
         assigned AS (
           UPDATE ${this.s}.desktops d SET state = 'assigned', "user" = $1 FROM picked
           WHERE d.id = picked.id RETURNING d.id)
         SELECT EXISTS (SELECT 1 FROM ${this.s}.pools WHERE name = $2) AS pool,
           (SELECT id FROM assigned) AS id,
           EXISTS (SELECT 1 FROM ${this.s}.desktops WHERE pool = $2 AND state = 'free') AS any_free`,
        [user, pool],
      );
      const row = r.rows[0]!;
      if (row.id) return { id: row.id };
      if (!row.pool) return 'no-pool';
      if (!row.any_free) return 'none-free';
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
    return this.ledger.claim(key, operation, params, owner, leaseUntil);
  }

  settle(key: string, operation: string, params: unknown, outcome: Settlement): Promise<void> {
    return this.ledger.settle(key, operation, params, outcome);
  }

  close(): Promise<void> {
    return this.db.close();
  }
}
