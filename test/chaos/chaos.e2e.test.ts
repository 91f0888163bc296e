/**
 * The chaos soak (`soak.ts`) on the embedded store: each pod's brokers share a SQLite file.
 */
import Database from 'better-sqlite3';
import * as path from 'node:path';
import type { DevFederation } from '@wanas/devfed';
import { SECONDS, WARM_SECONDS, soak, startSoakFederation } from './soak';

describe('chaos soak on SQLite (real processes, emulated WAN)', () => {
  let f: DevFederation;
  beforeAll(async () => {
    f = await startSoakFederation();
  }, 90_000);
  afterAll(async () => {
    await f?.stop();
  });

  it(
    `keeps every promise for ${SECONDS} s of faults`,
    () =>
      soak(f, {
        name: 'sqlite',
        desktopsOfChaosUsers: (pod) => {
          const [site, name] = pod.split('/');
          const db = new Database(path.join(f.dir, 'data', `${site}.${name}.sqlite`), { readonly: true });
          try {
            return Promise.resolve(
              db
                .prepare("SELECT user, COUNT(*) AS n FROM desktops WHERE user LIKE 'u-chaos-%' GROUP BY user")
                .all() as { user: string; n: number }[],
            );
          } finally {
            db.close();
          }
        },
      }),
    (SECONDS + WARM_SECONDS + 120) * 1000,
  );
});
