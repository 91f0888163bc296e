import Database from 'better-sqlite3';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_IDEMPOTENCY_WINDOW_MS, type OnceOutcome } from '../ledger/ledger';
import { SQLITE_LEDGER_SCHEMA, SqliteLedger } from '../ledger/ledger-sqlite';
import { DEFAULT_POOLS, seedRows } from './seed';

export { DEMO_USERS, SEED_DESKTOPS_PER_POOL, SEED_POOLS } from './seed';

/** How long opening (and seeding) waits for a pod twin's write lock, ms: start-up only. */
const OPEN_BUSY_TIMEOUT_MS = 5000;
/**
 * How long one write waits, blocking, for a twin's lock, ms. better-sqlite3 is synchronous: a long busy
 * wait would stall every call of the broker (e.g. behind a twin frozen while it holds the lock), so writes
 * wait briefly and then retry off the event loop (see {@link SqliteInventory.onceWithin}).
 */
const WRITE_BUSY_TIMEOUT_MS = 20;
/** Pause between write retries while a twin holds the lock, ms. */
const BUSY_RETRY_MS = 25;

/** The pod database's inventory tables (the ledger's are `SQLITE_LEDGER_SCHEMA`). */
const SCHEMA = `
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS pools (name TEXT PRIMARY KEY);
      CREATE TABLE IF NOT EXISTS desktops (
        id TEXT PRIMARY KEY, pool TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('free', 'assigned')), user TEXT);
      CREATE INDEX IF NOT EXISTS desktops_user ON desktops(user);
      CREATE INDEX IF NOT EXISTS desktops_pool_state ON desktops(pool, state);
      CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY, desktop_id TEXT NOT NULL REFERENCES desktops(id), user TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('connected', 'disconnected')), started_at TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);
    `;

/** True for SQLite's "another connection holds the lock" errors (SQLITE_BUSY and its extended codes). */
function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

/** Runs `fn`, retrying while the database is busy, blocking up to `ms` (start-up only). */
function retryBusy<T>(fn: () => T, ms = OPEN_BUSY_TIMEOUT_MS): T {
  const until = Date.now() + ms;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      return fn();
    } catch (e) {
      if (!isBusy(e) || Date.now() > until) throw e;
      Atomics.wait(pause, 0, 0, BUSY_RETRY_MS);
    }
  }
}

/** A desktop of a pod's inventory. */
export interface Desktop {
  id: string;
  pool: string;
  state: 'free' | 'assigned';
  user: string | null;
}

/** A user's session on a desktop (the inventory's; a federation session between brokers is `session/`'s). */
export interface DesktopSession {
  id: string;
  desktopId: string;
  user: string;
  state: 'connected' | 'disconnected';
  startedAt: string;
}

/**
 * A pod's inventory of desktops and sessions, and its remembered idempotency keys, in one SQLite file
 * shared by the pod's brokers (WAL mode; writes take an immediate transaction, so twins never race).
 * Seeded with deterministic demo data the first time it is opened.
 */
export class SqliteInventory {
  private readonly db: Database.Database;
  /** The pod's exactly-once ledger, in the same file (and the same transactions as the inventory's writes). */
  readonly ledger: SqliteLedger;

  constructor(
    readonly file: string,
    readonly site: string,
    readonly pod: string,
    /** How long an idempotency key is remembered, ms. */
    readonly idempotencyWindowMs = DEFAULT_IDEMPOTENCY_WINDOW_MS,
    /** Desktops per pool seeded into a new database. */
    private readonly pools: Record<string, number> = DEFAULT_POOLS,
    /** Sessions seeded besides the demo users' (see `seedRows`). */
    private readonly sessions = 0,
  ) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file, { timeout: OPEN_BUSY_TIMEOUT_MS });
    // Twins open the same file at the same moment: SQLite may answer BUSY without waiting (changing the
    // journal mode, a read lock upgraded to a write), so each step retries until OPEN_BUSY_TIMEOUT_MS.
    retryBusy(() => this.db.pragma('journal_mode = WAL'));
    this.db.pragma('synchronous = NORMAL');
    retryBusy(() => this.db.transaction(() => this.db.exec(SCHEMA + SQLITE_LEDGER_SCHEMA)).immediate());
    this.ledger = new SqliteLedger(this.db, idempotencyWindowMs);
    retryBusy(() => this.seed());
    this.db.pragma(`busy_timeout = ${WRITE_BUSY_TIMEOUT_MS}`);
  }

  /** Seeds the demo inventory once per file (the first twin to get the write lock does it). */
  private seed(): void {
    this.db
      .transaction(() => {
        if (this.db.prepare(`SELECT v FROM meta WHERE k = 'seeded'`).get()) return;
        const rows = seedRows(this.site, this.pod, this.pools, this.sessions);
        const insertPool = this.db.prepare(`INSERT INTO pools (name) VALUES (?)`);
        for (const pool of rows.pools) insertPool.run(pool);
        const insertDesktop = this.db.prepare(
          `INSERT INTO desktops (id, pool, state, user) VALUES (?, ?, ?, ?)`,
        );
        for (const d of rows.desktops) insertDesktop.run(d.id, d.pool, d.state, d.user);
        const insertSession = this.db.prepare(
          `INSERT INTO sessions (id, desktop_id, user, state, started_at) VALUES (?, ?, ?, ?, ?)`,
        );
        for (const x of rows.sessions) insertSession.run(x.id, x.desktopId, x.user, x.state, x.startedAt);
        this.db.prepare(`INSERT INTO meta (k, v) VALUES ('seeded', ?)`).run(new Date().toISOString());
      })
      .immediate();
  }

  /** A user's desktops and sessions in this pod. */
  findUser(user: string): { desktops: Desktop[]; sessions: DesktopSession[] } {
    const desktops = this.db
      .prepare(`SELECT id, pool, state, user FROM desktops WHERE user = ? ORDER BY id`)
      .all(user) as Desktop[];
    const sessions = this.db
      .prepare(
        `SELECT id, desktop_id AS desktopId, user, state, started_at AS startedAt FROM sessions WHERE user = ? ORDER BY id`,
      )
      .all(user) as DesktopSession[];
    return { desktops, sessions };
  }

  /** Sessions from `q.after` in id order (SQLite compares TEXT byte by byte), at most `q.limit` (0: all). */
  listSessions(q: {
    after: string;
    limit: number;
    user?: string | undefined;
    state?: string | undefined;
  }): DesktopSession[] {
    return this.db
      .prepare(
        `SELECT id, desktop_id AS desktopId, user, state, started_at AS startedAt FROM sessions
         WHERE id >= @after AND (@user IS NULL OR user = @user) AND (@state IS NULL OR state = @state)
         ORDER BY id LIMIT @limit`,
      )
      .all({
        after: q.after,
        user: q.user ?? null,
        state: q.state ?? null,
        limit: q.limit || -1,
      }) as DesktopSession[];
  }

  /** Desktops total / free / in use, overall and per pool. */
  capacity(): {
    total: number;
    free: number;
    inUse: number;
    pools: Record<string, { total: number; free: number; inUse: number }>;
  } {
    const rows = this.db
      .prepare(
        `SELECT pool, COUNT(*) AS total, SUM(state = 'free') AS free FROM desktops GROUP BY pool ORDER BY pool`,
      )
      .all() as { pool: string; total: number; free: number }[];
    const pools: Record<string, { total: number; free: number; inUse: number }> = {};
    let total = 0;
    let free = 0;
    for (const r of rows) {
      pools[r.pool] = { total: r.total, free: r.free, inUse: r.total - r.free };
      total += r.total;
      free += r.free;
    }
    return { total, free, inUse: total - free, pools };
  }

  /** The ledger's {@link SqliteLedger.once}: `action` run once per key, in the same transaction. */
  once(
    key: string,
    operation: string,
    params: unknown,
    action: () => Record<string, unknown>,
    windowMs?: number,
  ): OnceOutcome {
    return this.ledger.once(key, operation, params, action, windowMs);
  }

  /**
   * {@link once}, waiting without blocking the event loop while another broker of the pod holds the write
   * lock, until `deadline` (epoch ms). Nothing has run when the lock is not had (BEGIN IMMEDIATE), so a
   * retry is safe. Throws {@link StoreBusyError} when the lock stays taken past the deadline, or once
   * `signal` is aborted (the request was cancelled).
   */
  async onceWithin(
    deadline: number,
    key: string,
    operation: string,
    params: unknown,
    action: () => Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<OnceOutcome> {
    const started = Date.now();
    for (;;) {
      try {
        return this.once(key, operation, params, action);
      } catch (e) {
        if (!isBusy(e)) throw e;
        // Nothing was written yet: a request cancelled (or out of time) while it waits stops waiting.
        if (Date.now() + BUSY_RETRY_MS >= deadline || signal?.aborted)
          throw new StoreBusyError(this.site, this.pod, Date.now() - started);
        await new Promise((r) => setTimeout(r, BUSY_RETRY_MS));
      }
    }
  }

  /** Assigns a free desktop of `pool` to `user`; undefined when the pool has none free. Call inside {@link once}. */
  assignFreeDesktop(user: string, pool: string): Desktop | undefined {
    const d = this.db
      .prepare(`SELECT id FROM desktops WHERE pool = ? AND state = 'free' ORDER BY id LIMIT 1`)
      .get(pool) as { id: string } | undefined;
    if (!d) return undefined;
    this.db.prepare(`UPDATE desktops SET state = 'assigned', user = ? WHERE id = ?`).run(user, d.id);
    return { id: d.id, pool, state: 'assigned', user };
  }

  /** True when the pod has a pool of that name. */
  hasPool(pool: string): boolean {
    return !!this.db
      .prepare(`SELECT 1 FROM pools WHERE name = ? UNION ALL SELECT 1 FROM desktops WHERE pool = ? LIMIT 1`)
      .get(pool, pool);
  }

  /** Closes the database. */
  close(): void {
    this.db.close();
  }
}

/** True for SQLite's "another connection holds the lock" errors: the step did nothing and may be retried. */
export function isStoreBusy(e: unknown): boolean {
  return isBusy(e);
}

/** The pod's database stayed locked by another broker of the pod until the request's deadline. */
export class StoreBusyError extends Error {
  constructor(
    readonly site: string,
    readonly pod: string,
    readonly waitedMs: number,
  ) {
    super(`the database of pod ${site}/${pod} stayed locked by another broker of the pod for ${waitedMs} ms`);
    this.name = 'StoreBusyError';
  }
}
