/**
 * The ledger on PostgreSQL: the pod schema's `idempotency` and `idempotency_claims` tables (migrations in
 * `store/postgres-schema.ts`), row locks instead of a file lock. A resend is answered by a read first (one
 * round trip, nothing locked); a keyed write's own transaction looks again under its locks, since a twin
 * may commit the key in between. The transactions themselves are the store's (`store/postgres-tx.ts`).
 */
import type { Bounds, Tx } from '../store/postgres-tx';
import {
  SETTLE_TIMEOUT_MS,
  paramsHashOf,
  replayOf,
  storedOutcome,
  type ClaimOutcome,
  type OnceOutcome,
  type Refusal,
  type Settlement,
} from './ledger';

/** How the ledger runs its statements: the store's bounded transactions. */
export interface PostgresLedgerDeps {
  /** The pod's schema, quoted for SQL. */
  schema: string;
  /** How long an idempotency key is remembered, ms. */
  windowMs: number;
  /** `fn` in one transaction within `b` (`oneRound`: its statements sent together, committed at once). */
  tx<T>(b: Bounds, fn: (tx: Tx) => Promise<T>, oneRound?: boolean): Promise<T>;
  /** A transaction tried again when a twin broker committed the same key first (a unique violation). */
  keyed<T>(b: Bounds, fn: (tx: Tx) => Promise<T>): Promise<T>;
}

/** A pod's ledger in its PostgreSQL schema (see the file's comment). */
export class PostgresLedger {
  constructor(private readonly d: PostgresLedgerDeps) {}

  /** The key's record answered in one round trip (a read), before a write's own transaction. */
  replay(b: Bounds, key: string, paramsHash: string): Promise<OnceOutcome | undefined> {
    return this.d.tx(b, (tx) => this.lookup(tx, key, paramsHash), true);
  }

  /** Inside a write's transaction: the key's record (after dropping expired entries), if any. */
  remembered(tx: Tx, key: string, paramsHash: string): Promise<OnceOutcome | undefined> {
    const oldest = Date.now() - this.d.windowMs;
    tx.send(`DELETE FROM ${this.d.schema}.idempotency WHERE created_at < $1`, [oldest]);
    return this.lookup(tx, key, paramsHash, oldest);
  }

  /** Inside a write's transaction: remembers its outcome with the key. */
  remember(
    tx: Tx,
    key: string,
    operation: string,
    paramsHash: string,
    outcome: Record<string, unknown> | Refusal,
  ): void {
    tx.send(
      `INSERT INTO ${this.d.schema}.idempotency (key, operation, params_hash, result, created_at) VALUES ($1, $2, $3, $4, $5)`,
      [key, operation, paramsHash, storedOutcome(outcome), Date.now()],
    );
  }

  /** The ledger's first step for an asynchronous write (see `ledger.ts`). */
  async claim(
    key: string,
    operation: string,
    params: unknown,
    owner: string,
    leaseUntil: number,
  ): Promise<ClaimOutcome> {
    const s = this.d.schema;
    const hash = paramsHashOf(operation, params);
    const prev = await this.replay({ deadline: leaseUntil }, key, hash);
    if (prev) return prev;
    return this.d.keyed({ deadline: leaseUntil }, async (tx): Promise<ClaimOutcome> => {
      const [prev, held] = await Promise.all([
        this.remembered(tx, key, hash),
        tx.query<{ owner: string; lease_until: string }>(
          `SELECT owner, lease_until FROM ${s}.idempotency_claims WHERE key = $1 FOR UPDATE`,
          [key],
        ),
      ]);
      if (prev) return prev;
      const h = held.rows[0];
      if (h && Number(h.lease_until) > Date.now() && h.owner !== owner)
        return { pending: { owner: h.owner, leaseUntil: Number(h.lease_until) } };
      // No claim: a plain INSERT (a twin inserting at once makes this a unique violation: tried again).
      tx.send(
        h
          ? `UPDATE ${s}.idempotency_claims SET operation = $2, params_hash = $3, owner = $4, lease_until = $5 WHERE key = $1`
          : `INSERT INTO ${s}.idempotency_claims (key, operation, params_hash, owner, lease_until) VALUES ($1, $2, $3, $4, $5)`,
        [key, operation, hash, owner, leaseUntil],
      );
      return { claimed: true };
    });
  }

  /** The ledger's last step: remembers the outcome with the key, or (undefined) forgets the claim. */
  async settle(key: string, operation: string, params: unknown, outcome: Settlement): Promise<void> {
    const s = this.d.schema;
    await this.d.tx(
      { deadline: Date.now() + SETTLE_TIMEOUT_MS },
      async (tx) => {
        tx.send(`DELETE FROM ${s}.idempotency_claims WHERE key = $1`, [key]);
        if (outcome === undefined) return;
        tx.send(`DELETE FROM ${s}.idempotency WHERE key = $1`, [key]);
        this.remember(tx, key, operation, paramsHashOf(operation, params), outcome);
      },
      true,
    );
  }

  /** The key's record within the window, read as a replay or a conflict. */
  private async lookup(
    tx: Tx,
    key: string,
    paramsHash: string,
    oldest = Date.now() - this.d.windowMs,
  ): Promise<OnceOutcome | undefined> {
    // Kept as JSON text (not jsonb): a replay has the first answer's very key order.
    const prev = await tx.query<{ operation: string; paramsHash: string; result: string }>(
      `SELECT operation, params_hash AS "paramsHash", result FROM ${this.d.schema}.idempotency
       WHERE key = $1 AND created_at >= $2`,
      [key, oldest],
    );
    return prev.rows[0] && replayOf(prev.rows[0], paramsHash);
  }
}
