/**
 * Which store a pod's brokers share, from its store URL: the pod's `store`, else `settings.store`, else
 * the embedded default `sqlite:` file in `settings.dataDir`. `{site}` and `{pod}` anywhere in the URL are
 * filled in. `sqlite:PATH` is relative to the topology file; `postgres://…`/`postgresql://…` is a standard
 * connection URL whose `?schema=NAME` puts the pod's tables in that schema (default `wanas-SITE-POD`), and
 * whose missing parts (host, user, password, database, SSL) come from the libpq variables (PGHOST, PGUSER,
 * PGPASSWORD, PGDATABASE, PGSSLMODE, …) — a password belongs in a Secret, not in the topology.
 */
import * as path from 'node:path';
import { dataDirOf, podOf, type BrokerInfo, type Topology } from '@wanas/topology';
import { SqliteInventory } from './sqlite-inventory';
import { SqlitePodState, type PodState } from './pod-state';
import { PostgresPodState } from './postgres-state';

/** A store URL with `{site}` and `{pod}` filled in. */
export function storeUrlOf(t: Topology, site: string, pod: string): string {
  const url =
    podOf(t, site, pod)?.store ??
    t.settings.store ??
    `sqlite:${path.join(dataDirOf(t), '{site}.{pod}.sqlite')}`;
  return url.replace(/\{site\}/g, site).replace(/\{pod\}/g, pod);
}

/** Opens the store of this broker's pod (a PostgreSQL store connects lazily: see {@link PostgresPodState.migrate}). */
export function openPodState(t: Topology, info: BrokerInfo, onError: (e: Error) => void): PodState {
  const url = storeUrlOf(t, info.site, info.pod);
  const pools = podOf(t, info.site, info.pod)?.pools;
  const sessions = podOf(t, info.site, info.pod)?.sessions ?? 0;
  const windowMs = t.settings.idempotencyWindowMs;
  if (url.startsWith('sqlite:')) {
    const file = path.resolve(t.file ? path.dirname(t.file) : process.cwd(), url.slice('sqlite:'.length));
    return new SqlitePodState(new SqliteInventory(file, info.site, info.pod, windowMs, pools, sessions));
  }
  const u = new URL(url);
  const schema = u.searchParams.get('schema') ?? `wanas-${info.site}-${info.pod}`;
  u.searchParams.delete('schema');
  return new PostgresPodState({
    connectionString: u.toString(),
    schema,
    site: info.site,
    pod: info.pod,
    idempotencyWindowMs: windowMs,
    pools,
    sessions,
    onError,
  });
}
