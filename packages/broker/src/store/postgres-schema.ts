/**
 * The PostgreSQL store's schema: versioned migrations (append only) run at start under an advisory lock,
 * so replicas of one pod starting together apply each one once, and the demo inventory seeded in the same
 * transaction. A broker older than its pod's database refuses to start, naming both versions.
 */
import type { Tx } from './postgres-tx';
import { seedRows } from './seed';

/** The schema's migrations, in order: index + 1 is the version. `s` is the quoted schema name. */
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
  // Listings page through sessions by id in byte order (COLLATE "C"), whatever the database's locale.
  (s) => `CREATE INDEX sessions_id_bytes ON ${s}.sessions (id COLLATE "C");`,
];

/** The newest schema version this broker knows. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

/** A broker older than its pod's database: it refuses to start, naming both versions. */
export class SchemaTooNewError extends Error {}

/** Whom a migration is for: the pod (named in errors and the seed) and its schema. */
export interface SchemaTarget {
  site: string;
  pod: string;
  /** The schema's name, unquoted. */
  schema: string;
  /** Where the database is, for errors (never with a password). */
  where: string;
  pools: Record<string, number> | undefined;
  /** Sessions to seed besides the demo users' (see `seedRows`). */
  sessions?: number;
}

/**
 * Brings the pod's schema to {@link POSTGRES_SCHEMA_VERSION} and seeds it once, in the caller's
 * transaction `c`, under an advisory lock on the schema's name.
 */
export async function migrateSchema(c: Pick<Tx, 'query'>, t: SchemaTarget): Promise<void> {
  const s = `"${t.schema}"`;
  await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`wanas:${t.schema}`]);
  await c.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
  await c.query(`CREATE TABLE IF NOT EXISTS ${s}.wanas_schema (version INT NOT NULL)`);
  const r = await c.query<{ v: number | null }>(`SELECT max(version) AS v FROM ${s}.wanas_schema`);
  const current = r.rows[0]?.v ?? 0;
  if (current > POSTGRES_SCHEMA_VERSION)
    throw new SchemaTooNewError(
      `the database of pod ${t.site}/${t.pod} (${t.where}) has schema version ${current}; this broker knows up to ${POSTGRES_SCHEMA_VERSION}: upgrade the broker`,
    );
  for (let v = current + 1; v <= POSTGRES_SCHEMA_VERSION; v++) {
    await c.query(MIGRATIONS[v - 1]!(s));
    await c.query(`INSERT INTO ${s}.wanas_schema (version) VALUES ($1)`, [v]);
  }
  await seed(c, s, t);
}

/** The demo inventory, once per schema. */
async function seed(c: Pick<Tx, 'query'>, s: string, t: SchemaTarget): Promise<void> {
  const done = await c.query(`SELECT 1 FROM ${s}.meta WHERE k = 'seeded'`);
  if (done.rowCount) return;
  const rows = seedRows(t.site, t.pod, t.pools, t.sessions);
  // One statement a table (arrays unnested): a pod seeded with thousands of sessions takes three round trips.
  const column = <T>(list: T[], f: (r: T) => unknown) => list.map(f);
  await c.query(`INSERT INTO ${s}.pools (name) SELECT unnest($1::text[])`, [rows.pools]);
  const d = rows.desktops;
  await c.query(
    `INSERT INTO ${s}.desktops (id, pool, state, "user") SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])`,
    [column(d, (x) => x.id), column(d, (x) => x.pool), column(d, (x) => x.state), column(d, (x) => x.user)],
  );
  const x = rows.sessions;
  await c.query(
    `INSERT INTO ${s}.sessions (id, desktop_id, "user", state, started_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])`,
    [
      column(x, (r) => r.id),
      column(x, (r) => r.desktopId),
      column(x, (r) => r.user),
      column(x, (r) => r.state),
      column(x, (r) => r.startedAt),
    ],
  );
  await c.query(`INSERT INTO ${s}.meta (k, v) VALUES ('seeded', $1)`, [new Date().toISOString()]);
}
