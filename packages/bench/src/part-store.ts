/**
 * The `store` part (issue 25): the pod's state on SQLite (a file its twin brokers share) against PostgreSQL
 * (a private server on this machine, a schema per pod), through the federation: writes per second and their
 * p99 (`desktops.provision`, each with its own key, one after another), and the keyed resend — the replay
 * path, answered from the idempotency ledger — against a read of the same pod (`sessions.find`).
 * Target: the replay's p50 ≤ 1.1 × the read's.
 */
import { DevFederation, PrivatePostgres } from '@wanas/devfed';
import { timed, type BenchCounts, type Progress } from './parts';
import { summarize } from './stats';

const ENTRY = 's1-p1-a';
/** Desktops in the pod's pool: more than the writes of a run. */
const POOL_SIZE = 5000;

/** One store's figures. */
interface StoreFigures {
  store: 'sqlite' | 'postgres';
  writes: number;
  writesPerSecond: number;
  writeP50Ms: number;
  writeP99Ms: number;
  replayP50Ms: number;
  readP50Ms: number;
  /** replay p50 ÷ read p50 (target ≤ 1.1). */
  replayToRead: number;
}

/** What the part reports. */
export interface StoreResult {
  part: 'store';
  stores: StoreFigures[];
}

async function measureStore(
  store: 'sqlite' | 'postgres',
  url: string | undefined,
  n: number,
  progress: Progress,
): Promise<StoreFigures> {
  const f = await DevFederation.start({
    spec: { s1: { p1: 2 } },
    wanLatencyMs: 0,
    settings: url ? { store: url } : {},
    pools: () => ({ standard: POOL_SIZE }),
  });
  try {
    const ask = f.aggregator(ENTRY);
    const provision = (key: string) =>
      ask({
        operation: 'desktops.provision',
        params: { user: `u-${key}`, pool: 'standard' },
        idempotencyKey: key,
      });
    const read = () => ask({ operation: 'sessions.find', params: { user: 'alice' } });
    await timed(20, progress, `store ${store}: warm-up`, async () => {
      await read();
      await provision(`warm-${Math.random()}`);
    });
    let i = 0;
    const t0 = performance.now();
    const writes = await timed(n, progress, `store ${store}: writes`, () => provision(`w-${i++}`));
    const writesPerSecond = n / ((performance.now() - t0) / 1000);
    // Replays and reads alternate, so both see the same machine.
    const replays: number[] = [];
    const reads: number[] = [];
    progress.start(`store ${store}: replays and reads`, n);
    for (let k = 0; k < n; k++) {
      let t = performance.now();
      await provision(`w-${k}`);
      replays.push(performance.now() - t);
      t = performance.now();
      await read();
      reads.push(performance.now() - t);
      progress.tick();
    }
    const w = summarize(writes);
    const replayP50Ms = summarize(replays).p50Ms;
    const readP50Ms = summarize(reads).p50Ms;
    return {
      store,
      writes: n,
      writesPerSecond: Math.round(writesPerSecond),
      writeP50Ms: w.p50Ms,
      writeP99Ms: w.p99Ms,
      replayP50Ms,
      readP50Ms,
      replayToRead: replayP50Ms / readP50Ms,
    };
  } finally {
    await f.stop();
  }
}

/** Runs the store part: SQLite, then PostgreSQL (a private server started for it). */
export async function storePart(counts: BenchCounts, progress: Progress): Promise<StoreResult> {
  const n = counts.smoke ? 20 : Math.max(300, Math.round(counts.requests / 2));
  const sqlite = await measureStore('sqlite', undefined, n, progress);
  const server = await PrivatePostgres.start();
  try {
    const postgres = await measureStore('postgres', `${server.url()}?schema=wanas-{site}-{pod}`, n, progress);
    return { part: 'store', stores: [sqlite, postgres] };
  } finally {
    await server.stop();
  }
}

/** Human lines for the store part's result. */
export function describeStore(r: StoreResult): string {
  return [
    '  1 site × 1 pod × 2 brokers, no WAN delay; desktops.provision with a new key each, one after another; then each key resent (the replay) alternating with a read (sessions.find) of the same pod:',
    ...r.stores.map(
      (s) =>
        `  ${s.store.padEnd(8)} ${s.writesPerSecond} writes/s (p50 ${s.writeP50Ms} ms, p99 ${s.writeP99Ms} ms); replay p50 ${s.replayP50Ms} ms vs read p50 ${s.readP50Ms} ms = ${s.replayToRead.toFixed(2)}× (target ≤ 1.1×)`,
    ),
  ].join('\n');
}
