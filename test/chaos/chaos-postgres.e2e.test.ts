/**
 * The chaos soak (`soak.ts`) on PostgreSQL: every pod's brokers share one schema of a real server, and
 * halfway through the server is restarted the hard way (`-m immediate`, a crash) while writes run. Still
 * 0 doubled, 0 lost per pod; the first write sent once the server accepts connections again is
 * acknowledged (no broker restarted).
 */
import { PrivatePostgres, type DevFederation } from '@wanas/devfed';
import pg from 'pg';
import { SECONDS, WARM_SECONDS, soak, startSoakFederation } from './soak';

describe('chaos soak on PostgreSQL with a database restart (real processes, emulated WAN)', () => {
  let server: PrivatePostgres;
  let f: DevFederation;
  beforeAll(async () => {
    server = await PrivatePostgres.start();
    f = await startSoakFederation({ store: `${server.url()}?schema=chaos-{site}-{pod}` });
  }, 90_000);
  afterAll(async () => {
    await f?.stop();
    await server?.stop();
  });

  it(
    `keeps every promise for ${SECONDS} s of faults and a database crash`,
    () =>
      soak(f, {
        name: 'postgres',
        desktopsOfChaosUsers: async (pod) => {
          const [site, name] = pod.split('/');
          const c = new pg.Client({ connectionString: server.url() });
          await c.connect();
          try {
            const r = await c.query<{ user: string; n: number }>(
              `SELECT "user", count(*)::int AS n FROM "chaos-${site}-${name}".desktops WHERE "user" LIKE 'u-chaos-%' GROUP BY "user"`,
            );
            return r.rows;
          } finally {
            await c.end();
          }
        },
        midway: async () => {
          await server.stopServer('immediate');
          await server.startServer();
        },
      }),
    (SECONDS + WARM_SECONDS + 120) * 1000,
  );
});
