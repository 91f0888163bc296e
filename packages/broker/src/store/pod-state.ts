/**
 * A pod's shared state as the broker uses it, whichever database keeps it: the inventory of the built-in
 * desktop operations and the idempotency ledger that makes writes exactly-once. Every method is async and
 * never blocks the event loop for long. Two kinds: SQLite (one host; `SqlitePodState` here) and PostgreSQL
 * (replicas on different nodes; `postgres-state.ts`), chosen by the store URL (`open-state.ts`).
 */
import { status } from '@grpc/grpc-js';
import { BrokerError } from '../errors';
import {
  Refusal,
  SETTLE_TIMEOUT_MS,
  type ClaimOutcome,
  type Ledger,
  type OnceOutcome,
  type Settlement,
} from '../ledger/ledger';
import {
  SqliteInventory,
  StoreBusyError,
  isStoreBusy,
  type Desktop,
  type DesktopSession,
} from './sqlite-inventory';

export type { DesktopSession };
/** Pause between tries while a twin broker holds SQLite's write lock, ms. */
const BUSY_RETRY_MS = 25;

/** Desktops total / free / in use, overall and per pool. */
export interface Capacity {
  total: number;
  free: number;
  inUse: number;
  pools: Record<string, { total: number; free: number; inUse: number }>;
}

/**
 * A page of a session listing: sessions whose id is `after` or later in byte order (SQL's `COLLATE "C"`),
 * in that order, at most `limit` (0: no limit), optionally of one user or in one state.
 */
export interface SessionQuery {
  after: string;
  limit: number;
  user?: string | undefined;
  state?: DesktopSession['state'] | undefined;
}

/** A desktop assignment asked once per key. */
export interface ProvisionRequest {
  key: string;
  user: string;
  pool: string;
  /** The broker that acts (kept in the result: `provisionedBy`). */
  brokerId: string;
  /** Epoch ms: the store gives up (UNAVAILABLE) rather than answer later. */
  deadline: number;
  signal?: AbortSignal;
}

/**
 * Whether a store answers, as its last use found it. `up`: the last use succeeded (or there was none yet).
 * `unreachable`: the last use could not reach it (refused, timed out, connection lost); `reason` says how.
 */
export interface StoreHealth {
  state: 'up' | 'unreachable';
  /** Epoch ms it entered the state. */
  since: number;
  reason: string;
}

/** A pod's state: inventory and idempotency ledger, shared by the pod's brokers. */
export interface PodState extends Ledger {
  /** `sqlite` or `postgres`. */
  readonly kind: 'sqlite' | 'postgres';
  /** Where it is, for logs and status (never with a password). */
  readonly where: string;
  /** A user's desktops and sessions in this pod (`signal`: the request's cancel stops the read). */
  findUser(
    user: string,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<{ desktops: Desktop[]; sessions: DesktopSession[] }>;
  /** Desktops total / free / in use. */
  capacity(deadline: number, signal?: AbortSignal): Promise<Capacity>;
  /** Sessions in id order from a point (a page of `sessions.list`). */
  listSessions(q: SessionQuery, deadline: number, signal?: AbortSignal): Promise<DesktopSession[]>;
  /**
   * Assigns a free desktop of the pool to the user once per key: the first outcome — the desktop, or the
   * refusal (NOT_FOUND no such pool, RESOURCE_EXHAUSTED none free) — is stored with the key in the same
   * transaction as the change, and replayed to a resend; the key with other params is a `conflict`.
   */
  provisionOnce(r: ProvisionRequest): Promise<OnceOutcome>;
  /** Whether it answers (for status and metrics). */
  health(): StoreHealth;
  close(): Promise<void>;
}

/** The refusals of a provision, the same text on every store. */
export const provisionRefusal = {
  noPool: (site: string, pod: string, pool: string) =>
    new Refusal(status.NOT_FOUND, `params.pool: pod ${site}/${pod} has no pool "${pool}"`),
  full: (site: string, pod: string, pool: string) =>
    new Refusal(status.RESOURCE_EXHAUSTED, `pool "${pool}" of ${site}/${pod} has no free desktop`),
};

/**
 * The SQLite store behind the async interface: the synchronous {@link SqliteInventory} (a file shared by the
 * pod's brokers on one host), its write steps retried off the event loop while a twin holds the lock.
 */
export class SqlitePodState implements PodState {
  readonly kind = 'sqlite';

  constructor(readonly store: SqliteInventory) {}

  get where(): string {
    return `sqlite:${this.store.file}`;
  }

  findUser(user: string): Promise<{ desktops: Desktop[]; sessions: DesktopSession[] }> {
    return Promise.resolve(this.store.findUser(user));
  }

  capacity(): Promise<Capacity> {
    return Promise.resolve(this.store.capacity());
  }

  listSessions(q: SessionQuery): Promise<DesktopSession[]> {
    return Promise.resolve(this.store.listSessions(q));
  }

  provisionOnce(r: ProvisionRequest): Promise<OnceOutcome> {
    const { site, pod } = this.store;
    return this.store.onceWithin(
      r.deadline,
      r.key,
      'desktops.provision',
      { user: r.user, pool: r.pool },
      () => {
        // Refusals are remembered with the key like results: a resend hears the same "not here".
        if (!this.store.hasPool(r.pool)) throw provisionRefusal.noPool(site, pod, r.pool);
        const d = this.store.assignFreeDesktop(r.user, r.pool);
        if (!d) throw provisionRefusal.full(site, pod, r.pool);
        return { desktop: d as unknown as Record<string, unknown>, provisionedBy: r.brokerId };
      },
      r.signal,
    );
  }

  claim(
    key: string,
    operation: string,
    params: unknown,
    owner: string,
    leaseUntil: number,
  ): Promise<ClaimOutcome> {
    return whenFree(this.store, leaseUntil, () =>
      this.store.ledger.claim(key, operation, params, owner, leaseUntil),
    );
  }

  settle(key: string, operation: string, params: unknown, outcome: Settlement) {
    return whenFree(this.store, Date.now() + SETTLE_TIMEOUT_MS, () =>
      this.store.ledger.settle(key, operation, params, outcome),
    );
  }

  private readonly opened = Date.now();

  /** A file this broker has open: always up (a twin's lock is waited out, not a failure of the store). */
  health(): StoreHealth {
    return { state: 'up', since: this.opened, reason: '' };
  }

  close(): Promise<void> {
    this.store.close();
    return Promise.resolve();
  }
}

/** Runs a write step, retrying off the event loop while a twin broker holds the database's write lock. */
async function whenFree<T>(store: SqliteInventory, deadline: number, step: () => T): Promise<T> {
  const started = Date.now();
  for (;;) {
    try {
      return step();
    } catch (e) {
      if (!isStoreBusy(e)) throw e;
      if (Date.now() + BUSY_RETRY_MS >= deadline)
        throw new BrokerError(
          status.UNAVAILABLE,
          new StoreBusyError(store.site, store.pod, Date.now() - started).message,
        );
      await new Promise((res) => setTimeout(res, BUSY_RETRY_MS));
    }
  }
}
