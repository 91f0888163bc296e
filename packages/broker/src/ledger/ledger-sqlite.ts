/**
 * The ledger on SQLite: the pod file's `idempotency` (remembered outcomes) and `idempotency_claims`
 * (claims in flight) tables, written in immediate transactions, so the pod's brokers on one host never
 * race. Synchronous, as better-sqlite3 is: the store (`store/pod-state.ts`) retries a busy step off the
 * event loop.
 */
import type Database from 'better-sqlite3';
import {
  Refusal,
  paramsHashOf,
  replayOf,
  storedOutcome,
  type ClaimOutcome,
  type OnceOutcome,
  type Settlement,
} from './ledger';

/** The ledger's tables (created with the pod's other tables). */
export const SQLITE_LEDGER_SCHEMA = `
      CREATE TABLE IF NOT EXISTS idempotency (
        key TEXT PRIMARY KEY, operation TEXT NOT NULL, params_hash TEXT NOT NULL,
        result TEXT NOT NULL, created_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS idempotency_claims (
        key TEXT PRIMARY KEY, operation TEXT NOT NULL, params_hash TEXT NOT NULL,
        owner TEXT NOT NULL, lease_until INTEGER NOT NULL);
    `;

/** A pod's ledger in its SQLite file (see the file's comment). */
export class SqliteLedger {
  constructor(
    private readonly db: Database.Database,
    /** How long an idempotency key is remembered, ms. */
    readonly windowMs: number,
  ) {}

  /**
   * Runs `action` (synchronous, in the same immediate transaction) once per key: a remembered outcome is
   * replayed; a first run's result is remembered with the key — and so is the {@link Refusal} it threw
   * ("no free desktop here"): a first-fit search resent after a lost answer then hears the same "not here"
   * from the pods it asked before and cannot act in a second pod. The key with other params is a `conflict`.
   */
  once(
    key: string,
    operation: string,
    params: unknown,
    action: () => Record<string, unknown>,
    windowMs = this.windowMs,
  ): OnceOutcome {
    const paramsHash = paramsHashOf(operation, params);
    return this.db
      .transaction((): OnceOutcome => {
        const now = Date.now();
        const prev = this.remembered(key, now - windowMs);
        if (prev) return replayOf(prev, paramsHash);
        const remember = (outcome: Record<string, unknown> | Refusal) =>
          this.db
            .prepare(
              `INSERT INTO idempotency (key, operation, params_hash, result, created_at) VALUES (?, ?, ?, ?, ?)`,
            )
            .run(key, operation, paramsHash, storedOutcome(outcome), now);
        let result: Record<string, unknown>;
        try {
          result = action();
        } catch (e) {
          if (!(e instanceof Refusal)) throw e;
          remember(e);
          return { refused: e, replayed: false };
        }
        remember(result);
        return { result, replayed: false };
      })
      .immediate();
  }

  /** The ledger's first step for an asynchronous write (see `ledger.ts`). */
  claim(key: string, operation: string, params: unknown, owner: string, leaseUntil: number): ClaimOutcome {
    const paramsHash = paramsHashOf(operation, params);
    return this.db
      .transaction((): ClaimOutcome => {
        const now = Date.now();
        const prev = this.remembered(key, now - this.windowMs);
        if (prev) return replayOf(prev, paramsHash);
        const held = this.db
          .prepare(`SELECT owner, lease_until AS leaseUntil FROM idempotency_claims WHERE key = ?`)
          .get(key) as { owner: string; leaseUntil: number } | undefined;
        if (held && held.leaseUntil > now && held.owner !== owner) return { pending: held };
        this.db
          .prepare(
            `INSERT OR REPLACE INTO idempotency_claims (key, operation, params_hash, owner, lease_until) VALUES (?, ?, ?, ?, ?)`,
          )
          .run(key, operation, paramsHash, owner, leaseUntil);
        return { claimed: true };
      })
      .immediate();
  }

  /** The ledger's last step: remembers the outcome with the key, or (undefined) forgets the claim. */
  settle(key: string, operation: string, params: unknown, outcome: Settlement): void {
    this.db
      .transaction(() => {
        this.db.prepare(`DELETE FROM idempotency_claims WHERE key = ?`).run(key);
        if (outcome === undefined) return;
        this.db
          .prepare(
            `INSERT OR REPLACE INTO idempotency (key, operation, params_hash, result, created_at) VALUES (?, ?, ?, ?, ?)`,
          )
          .run(key, operation, paramsHashOf(operation, params), storedOutcome(outcome), Date.now());
      })
      .immediate();
  }

  /** The key's row, after dropping the entries older than `oldest` (epoch ms). Inside a transaction. */
  private remembered(
    key: string,
    oldest: number,
  ): { operation: string; paramsHash: string; result: string } | undefined {
    this.db.prepare(`DELETE FROM idempotency WHERE created_at < ?`).run(oldest);
    return this.db
      .prepare(`SELECT operation, params_hash AS paramsHash, result FROM idempotency WHERE key = ?`)
      .get(key) as { operation: string; paramsHash: string; result: string } | undefined;
  }
}
