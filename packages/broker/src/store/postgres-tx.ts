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
import type pg from 'pg';
import { BrokerError, abortedError } from '../errors';
import { Refusal } from '../ledger/ledger';
import type { StoreHealth } from './pod-state';

/**
 * The `pg` module, loaded when a PostgreSQL store is first opened: a broker on the embedded store never
 * pays for it at start-up (about 40 ms of a broker's 0.8 s start, measured with --cpu-prof).
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const loadPg = (): typeof pg => require('pg') as typeof pg;

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
    const { Pool } = loadPg();
    this.pool = new Pool({ ...common, max: POOL_MAX, pipeline: true, application_name: applicationName });
    this.cancels = new Pool({ ...common, max: 1, application_name: `${applicationName} (cancel)` });
    // An idle connection the server ended (a restart, pg_terminate_backend): the pool replaces it.
    this.pool.on('error', onError);
    this.cancels.on('error', onError);
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
        if (!retry) throw this.failure(e);
      }
    }
  }

  private async runOnce<T>(b: Bounds, fn: (tx: Tx) => Promise<T>, oneRound: boolean): Promise<T> {
    const client = await within(
      b,
      'connecting to the pod store',
      () => this.pool.connect(),
      (c) => c.release(),
    );
    let broken: Error | boolean | undefined;
    // A connection that dies while checked out emits 'error' on its client (the pool listens only while it
    // is idle): unheard, that would end the broker. The statements in flight reject as well.
    const onError = (e: Error) => (broken = e);
    client.on('error', onError);
    // At the request's deadline or cancel: the running statement is cancelled on the server, and the
    // transaction given up at once — a frozen or unreachable server would never answer the cancel either.
    const bound = boundsOf(b, 'the pod store', () => this.cancelOn(client));
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
      const out = await Promise.race([running, bound.stopped]);
      await Promise.race([Promise.all([...sent, commit ?? client.query('COMMIT')]), bound.stopped]);
      return out;
    } catch (e) {
      if (bound.reason()) broken = true;
      else if (isUnreachable(e)) broken = e as Error;
      else await client.query('ROLLBACK').catch((r: unknown) => (broken = r as Error));
      throw bound.reason() ?? e;
    } finally {
      bound.disarm();
      // A broken client may still report its end after this: it keeps the listener until it is gone.
      if (!broken) client.off('error', onError);
      client.release(broken);
    }
  }

  /**
   * Cancels the client's running statement on the server (from a connection of its own: this one is
   * busy), and ends the connection: the transaction was given up, and a late cancel must not reach the
   * next user of the connection.
   */
  private cancelOn(client: pg.PoolClient): void {
    const { processID, connection } = client as unknown as {
      processID: number | null;
      connection?: { stream?: { destroy(): void } };
    };
    if (processID) this.cancels.query('SELECT pg_cancel_backend($1)', [processID]).catch(() => undefined);
    // Released with an error, a pipelined client would wait for its statements before closing: close now.
    connection?.stream?.destroy();
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
    if (e instanceof BrokerError || e instanceof Refusal) return e; // (a SchemaTooNewError passes as it is too)
    // The server's own statement timeout (this broker's cancel comes with the request's reason instead).
    if ((e as { code?: unknown }).code === '57014')
      return new BrokerError(status.DEADLINE_EXCEEDED, 'the pod store did not answer within the deadline', e);
    if (isUnreachable(e)) {
      this.transition('unreachable', (e as Error).message);
      return new BrokerError(status.UNAVAILABLE, `store unreachable: ${(e as Error).message}`, e);
    }
    return e;
  }

  async close(): Promise<void> {
    await Promise.all([this.pool.end(), this.cancels.end()]);
  }
}

/**
 * Watches a request's bounds while it uses the store: `stopped` rejects with the request's reason
 * (DEADLINE_EXCEEDED at its deadline, CANCELLED at its cancel) and `onStop` runs once then.
 */
function boundsOf(b: Bounds, what: string, onStop: () => void = () => undefined) {
  let why: BrokerError | undefined;
  let stop!: (e: BrokerError) => void;
  const stopped = new Promise<never>((_, reject) => (stop = reject));
  stopped.catch(() => undefined); // seen by whoever races it
  const fire = (reason: BrokerError) => {
    if (why) return;
    why = reason;
    onStop();
    stop(reason);
  };
  // Aborted at the overall deadline (DEADLINE_EXCEEDED) or by a cancel (CANCELLED): as any aborted work.
  const onAbort = () => fire(abortedError(b.signal!));
  const timer = setTimeout(
    () => fire(new BrokerError(status.DEADLINE_EXCEEDED, `${what}: no answer within the deadline`)),
    Math.max(0, b.deadline - Date.now()),
  );
  if (b.signal?.aborted) onAbort();
  else b.signal?.addEventListener('abort', onAbort, { once: true });
  return {
    stopped,
    reason: () => why,
    disarm: () => {
      clearTimeout(timer);
      b.signal?.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * What `start` yields, or the request's reason if its deadline or cancel comes first (nothing is started
 * when they already have); what comes too late goes to `late` (a connection back to the pool).
 */
export async function within<T>(
  b: Bounds,
  what: string,
  start: () => Promise<T>,
  late: (value: T) => void = () => undefined,
): Promise<T> {
  if (b.signal?.aborted) throw abortedError(b.signal);
  if (b.deadline <= Date.now()) throw new BrokerError(status.DEADLINE_EXCEEDED, `${what}: no time left`);
  const bound = boundsOf(b, what);
  const work = start();
  try {
    return await Promise.race([work, bound.stopped]);
  } catch (e) {
    if (bound.reason()) work.then(late, () => undefined);
    throw e;
  } finally {
    bound.disarm();
  }
}
