/**
 * The demo inventory a pod's store is seeded with the first time it is opened: pools of desktops, and
 * desktops and sessions for the demo users in about half of the pods (a stable hash of site, pod and user).
 * A pure function: the SQLite and the PostgreSQL store seed the same rows.
 */
import { createHash } from 'node:crypto';

/** Desktops seeded per pool in every pod. */
export const SEED_DESKTOPS_PER_POOL = 12;
/** Pools seeded in every pod unless its topology says otherwise (`standard` is in every pod by design). */
export const SEED_POOLS = ['standard', 'gpu'] as const;
/** The default pools: {@link SEED_DESKTOPS_PER_POOL} desktops in each of {@link SEED_POOLS}. */
export const DEFAULT_POOLS: Record<string, number> = Object.fromEntries(
  SEED_POOLS.map((p) => [p, SEED_DESKTOPS_PER_POOL]),
);
/** Demo users; each gets desktops in some pods, decided by a hash of (site, pod, user). */
export const DEMO_USERS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi'] as const;

/** The rows a new pod store starts with. */
export interface SeedRows {
  pools: string[];
  desktops: { id: string; pool: string; state: 'free' | 'assigned'; user: string | null }[];
  sessions: {
    id: string;
    desktopId: string;
    user: string;
    state: 'connected' | 'disconnected';
    startedAt: string;
  }[];
}

function hash(s: string): number {
  return createHash('sha256').update(s).digest().readUInt32BE(0);
}

/** The seed of pod `site`/`pod` with `pools` (desktops per pool). */
export function seedRows(site: string, pod: string, pools: Record<string, number> = DEFAULT_POOLS): SeedRows {
  const rows: SeedRows = { pools: [], desktops: [], sessions: [] };
  const free: SeedRows['desktops'] = [];
  for (const [pool, size] of Object.entries(pools)) {
    rows.pools.push(pool);
    for (let i = 1; i <= size; i++) {
      const d = {
        id: `${site}.${pod}.${pool}-${String(i).padStart(2, '0')}`,
        pool,
        state: 'free' as const,
        user: null,
      };
      rows.desktops.push(d);
      if (pool === 'standard') free.push(d);
    }
  }
  // Each demo user has a desktop in roughly half of the pods, decided by a stable hash.
  let n = 0;
  for (const user of DEMO_USERS) {
    const h = hash(`${site}/${pod}/${user}`);
    if (h % 2 !== 0 || free.length === 0) continue;
    const d = free.shift()!;
    Object.assign(d, { state: 'assigned', user });
    const state = (h >> 1) % 3 === 0 ? 'disconnected' : 'connected';
    const startedAt = new Date(Date.UTC(2026, 0, 1, 8, (h >> 3) % 600)).toISOString();
    rows.sessions.push({ id: `${site}.${pod}.s${++n}`, desktopId: d.id, user, state, startedAt });
  }
  return rows;
}
