/**
 * A failover of a pod's database to its standby while writes run, on real PostgreSQL servers: the primary
 * crashes, the standby (synchronous streaming replication) is promoted, and the name the brokers connect to
 * moves to it — here a socket folder reached through a link, as a DNS name or a Kubernetes Service moves in
 * a real cluster. The brokers' stores are not restarted: their pools drop the dead connections and connect
 * by name again; every write acknowledged before the failover is on the new primary, none doubled, and a
 * resend of any key answers from its idempotency record.
 */
import { PrivatePostgres } from '@wanas/devfed';
import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { PostgresPodState } from './postgres-state';

const WRITES = 60;
const FAILOVER_AT = 25;

let primary: PrivatePostgres;
let standby: PrivatePostgres;
let link: string;
beforeAll(async () => {
  primary = await PrivatePostgres.start();
  standby = await primary.startStandby(true);
  link = path.join(fs.mkdtempSync(path.join(path.dirname(primary.dir), 'wanas-name-')), 'db');
  fs.symlinkSync(primary.socketDir, link);
}, 120_000);
afterAll(async () => {
  await standby?.stop();
  await primary?.stop();
  if (link) fs.rmSync(path.dirname(link), { recursive: true, force: true });
});

/** Points the name at `to` atomically (a new link renamed over the old one). */
function moveName(to: string): void {
  const next = `${link}.next`;
  fs.symlinkSync(to, next);
  fs.renameSync(next, link);
}

type Provisioned = { result?: { desktop: { id: string } }; replayed: boolean };

it('keeps every acknowledged write and doubles none across a failover, without restarting a store', async () => {
  const url = `postgresql://postgres@${encodeURIComponent(link)}:${primary.port}/postgres`;
  const twins = [0, 1].map(
    () =>
      new PostgresPodState({
        connectionString: url,
        schema: 'wanas-failover',
        site: 's1',
        pod: 'p1',
        idempotencyWindowMs: 86_400_000,
        pools: { standard: 200 },
        onError: () => undefined,
      }),
  );
  await twins[0]!.migrate();
  const acked = new Map<string, string>();
  const write = async (i: number, deadlineMs: number): Promise<Provisioned | undefined> => {
    const out = (await twins[i % 2]!.provisionOnce({
      key: `f-${i}`,
      user: `f${i}`,
      pool: 'standard',
      brokerId: `b${i % 2}`,
      deadline: Date.now() + deadlineMs,
    }).catch(() => undefined)) as Provisioned | undefined; // the database gone: not acknowledged
    if (out?.result) acked.set(`f-${i}`, out.result.desktop.id);
    return out;
  };
  const inFlight: Promise<unknown>[] = [];
  let firstAfter: Provisioned | undefined;
  for (let i = 0; i < WRITES; i++) {
    if (i === FAILOVER_AT) {
      // Writes are in flight on both twins while the primary crashes.
      await primary.stopServer('immediate');
      await standby.promote();
      moveName(standby.socketDir);
      // The first write sent once the name leads to the new primary is acknowledged.
      firstAfter = await write(i, 5000);
      continue;
    }
    inFlight.push(write(i, 2000));
    await new Promise((r) => setTimeout(r, 5));
  }
  await Promise.all(inFlight);
  expect(firstAfter?.result).toBeDefined();

  // Every key resent through the other twin: an acknowledged one replays its desktop, the rest act once.
  for (let i = 0; i < WRITES; i++) {
    const out = (await twins[(i + 1) % 2]!.provisionOnce({
      key: `f-${i}`,
      user: `f${i}`,
      pool: 'standard',
      brokerId: 'resend',
      deadline: Date.now() + 5000,
    })) as Provisioned;
    const before = acked.get(`f-${i}`);
    if (before) expect([out.replayed, out.result?.desktop.id]).toEqual([true, before]);
  }
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  const rows = await c.query<{ user: string; n: number }>(
    `SELECT "user", count(*)::int AS n FROM "wanas-failover".desktops WHERE "user" LIKE 'f%' GROUP BY "user"`,
  );
  await c.end();
  expect(rows.rows).toHaveLength(WRITES);
  expect(rows.rows.filter((r) => r.n !== 1)).toEqual([]);
  expect(acked.size).toBeGreaterThan(FAILOVER_AT - 5);
  await Promise.all(twins.map((t) => t.close()));
}, 120_000);
