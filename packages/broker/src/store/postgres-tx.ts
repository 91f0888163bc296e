/**
 * How the PostgreSQL store talks to its database: transactions on a bounded, pipelined client pool (the
 * statements of one round are sent together: a write is two round trips, not one per statement), each
 * bounded by its request — a statement timeout within the deadline on the server, and the running
 * statement cancelled (pg_cancel_backend) when the request is cancelled or its deadline passes.
 *
 * A connection lost mid-transaction is run once more on a fresh connection while time is left: every
 * transaction of the store is a read or keyed by an idempotency key, so running it again either acts (the
 * first did not commit) or finds its own record (it did) — never acts twice.
 */
import { status } from '@grpc/grpc-js';
import pg from 'pg';
import { BrokerError } from '../errors';
import { Refusal } from './pod-store';
import { SchemaTooNewError } from './postgres-schema';
import type { StoreHealth } from './pod-state';

/** Connections one broker keeps to its pod's database at most. */
const POOL_MAX = 10;
/** How long getting a connection may take at most (less when the request leaves less), ms. */
const CONNECT_TIMEOUT_MS = 2000;
/** Runs of a transaction whose connection was lost (the first and one on a fresh connection). */
const MAX_RUNS = 2;

/** What bounds one transaction: the request's deadline and cancel. */
export interface Bounds {
  /** Epoch ms. */
  deadline: number;
  signal?: AbortSignal;
}

/** A transaction's statements: `query` to read a result, `send` for one checked at commit. */
export interface Tx {
  /** Sends a statement (behind those sent before it) and resolves with its result. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>>;
  /** Sends a statement whose result is only checked at commit (it goes in the commit's round trip). */
  send(text: string, values?: unknown[]): void;
}

/** SQLSTATE classes and codes that mean the database could not be used (not that the request was wrong). */
export function isUnreachable(e: unknown): boolean {
  const code = String((e as { code?: unknown }).code ?? '');
  return (
    /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EPIPE|EHOSTUNREACH)$/.test(code) ||
    code.startsWith('08') || // connection exceptions
    code === '57P01' ||
    code === '57P02' ||
    code === '57P03' || // shutting down, crash, cannot connect now
    code === '25006' || // read-only: a standby (a failover not finished, or a name not moved yet)
    /timeout exceeded when trying to connect|Connection terminated|connection timeout|not queryable/i.test(
      (e as Error).message ?? '',
    )
  );
}

/** A promise whose rejection is seen later (awaited at commit), not reported as unhandled now. */
function later<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** The pool of one pod's store and the one place its health changes. */
export class PgTransactions {
  private readonly pool: pg.Pool;
  /** A separate connection for cancels: the pool may be full of the very statements to cancel. */
  private readonly cancels: pg.Pool;
  private healthNow: StoreHealth = { state: 'up', since: Date.now(), reason: '' };

  constructor(connectionString: string, applicationName: string, onError: (e: Error) => void) {
    const common = {
      connectionString,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      idleTimeoutMillis: 30_000,
    };
    this.pool = new pg.Pool({ ...common, max: POOL_MAX, pipeline: true, application_name: applicationName });
    this.cancels = new pg.Pool({ ...common, max: 1, application_name: `${applicationName} (cancel)` });
    // An idle connection the server ended (a restart, pg_terminate_backend): the pool replaces it.
    this.pool.on('error', onError);
    this.cancels.on('error', onError);
  }

  /** A client for work outside a request (migrations); the caller releases it. */
  connect(): Promise<pg.PoolClient> {
    return this.pool.connect();
  }

  /**
   * Runs `fn` in one transaction within `b`, once more on a fresh connection if the first was lost.
   * `oneRound`: `fn` sends every statement before it first waits, and the commit goes with them (a read in
   * one round trip); otherwise the commit follows what `fn` sent last.
   */
  async run<T>(b: Bounds, fn: (tx: Tx) => Promise<T>, oneRound = false): Promise<T> {
    for (let run = 1; ; run++) {
      try {
        const out = await this.runOnce(b, fn, oneRound);
        this.transition('up');
        return out;
      } catch (e) {
        const retry = run < MAX_RUNS && isUnreachable(e) && !b.signal?.aborted && Date.now() < b.deadline;
        if (!retry) throw this.failure(e, b);
      }
    }
  }

  private async runOnce<T>(b: Bounds, fn: (tx: Tx) => Promise<T>, oneRound: boolean): Promise<T> {
    const client = await this.connectWithin(b);
    let broken: Error | boolean | undefined;
    // A connection that dies while checked out emits 'error' on its client (the pool listens only while it
    // is idle): unheard, that would end the broker. The statements in flight reject as well.
    const onError = (e: Error) => (broken = e);
    client.on('error', onError);
    const cancel = this.armCancel(client, b);
    const sent: Promise<unknown>[] = [];
    const tx: Tx = {
      query: (text, values) => client.query(text, values),
      send: (text, values) => void sent.push(later(client.query(text, values))),
    };
    try {
      const leftMs = Math.max(1, Math.floor(b.deadline - Date.now()));
      sent.push(later(client.query('BEGIN')));
      tx.send(
        "SELECT set_config('statement_timeout', $1, true), set_config('idle_in_transaction_session_timeout', $1, true)",
        [String(leftMs)],
      );
      const running = fn(tx);
      const commit = oneRound ? later(client.query('COMMIT')) : undefined;
      const out = await running;
      if (cancel.fired()) throw cancel.reason();
      await Promise.all([...sent, commit ?? client.query('COMMIT')]);
      return out;
    } catch (e) {
      if (cancel.fired())
        broken = true; // a late cancel must not reach the next user of this connection
      else if (isUnreachable(e)) broken = e as Error;
      else await client.query('ROLLBACK').catch((r: unknown) => (broken = r as Error));
      throw cancel.fired() ? cancel.reason() : e;
    } finally {
      cancel.disarm();
      // A broken client may still report its end after this: it keeps the listener until it is gone.
      if (!broken) client.off('error', onError);
      client.release(broken);
    }
  }

  /** A pooled client, or the request's deadline or cancel if they come first. */
  private async connectWithin(b: Bounds): Promise<pg.PoolClient> {
    if (b.signal?.aborted) throw new BrokerError(status.CANCELLED, 'cancelled before the pod store');
    const leftMs = b.deadline - Date.now();
    if (leftMs <= 0) throw new BrokerError(status.DEADLINE_EXCEEDED, 'no time left for the pod store');
    const connecting = this.pool.connect();
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const stop = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new BrokerError(status.DEADLINE_EXCEEDED, 'no connection to the pod store within the deadline'),
          ),
        leftMs,
      );
      onAbort = () =>
        reject(new BrokerError(status.CANCELLED, 'cancelled while connecting to the pod store'));
      b.signal?.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([connecting, stop]);
    } catch (e) {
      connecting.then(
        (c) => c.release(),
        () => undefined,
      ); // came too late: back to the pool
      throw e;
    } finally {
      clearTimeout(timer);
      if (onAbort) b.signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Cancels the client's running statement when the request is cancelled or its deadline passes (a
   * statement waiting for a twin's row lock, say); the transaction then fails with the request's reason.
   */
  private armCancel(client: pg.PoolClient, b: Bounds) {
    let why: BrokerError | undefined;
    const fire = (reason: BrokerError) => {
      if (why) return;
      why = reason;
      const pid = (client as unknown as { processID: number | null }).processID;
      if (pid) this.cancels.query('SELECT pg_cancel_backend($1)', [pid]).catch(() => undefined);
    };
    const onAbort = () =>
      fire(new BrokerError(status.CANCELLED, 'cancelled: the pod store statement was stopped'));
    const timer = setTimeout(
      () =>
        fire(new BrokerError(status.DEADLINE_EXCEEDED, 'the pod store did not answer within the deadline')),
      Math.max(0, b.deadline - Date.now()),
    );
    if (b.signal?.aborted) onAbort();
    else b.signal?.addEventListener('abort', onAbort, { once: true });
    return {
      fired: () => why !== undefined,
      reason: () => why!,
      disarm: () => {
        clearTimeout(timer);
        b.signal?.removeEventListener('abort', onAbort);
      },
    };
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
  private failure(e: unknown, b: Bounds): unknown {
    if (e instanceof BrokerError || e instanceof Refusal || e instanceof SchemaTooNewError) return e;
    if ((e as { code?: unknown }).code === '57014')
      return b.signal?.aborted
        ? new BrokerError(status.CANCELLED, 'cancelled: the pod store statement was stopped', e)
        : new BrokerError(status.DEADLINE_EXCEEDED, 'the pod store did not answer within the deadline', e);
    if (isUnreachable(e)) {
      this.transition('unreachable', (e as Error).message);
      return new BrokerError(status.UNAVAILABLE, `store unreachable: ${(e as Error).message}`, e);
    }
    return e;
  }

  /** Marks the store unreachable when `e` says so (for work outside {@link run}, such as migrations). */
  unreachableOn(e: unknown): unknown {
    return this.failure(e, { deadline: 0 });
  }

  async close(): Promise<void> {
    await Promise.all([this.pool.end(), this.cancels.end()]);
  }
}
