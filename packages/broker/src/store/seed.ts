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

/** The pool of the desktops that the topology's `sessions: N` seeds (one desktop a session). */
export const SEEDED_SESSIONS_POOL = 'seeded';
/** Users the seeded sessions are spread over. */
export const SEEDED_USERS = 10_000;

/**
 * The seed of pod `site`/`pod` with `pools` (desktops per pool) and `sessions` more sessions (the
 * topology's `sessions: N`, for listings at scale). Those are deterministic and spread: user `user-NNNN` of
 * {@link SEEDED_USERS}, each on its own desktop of pool {@link SEEDED_SESSIONS_POOL}, with ids `s-<16 hex>`
 * from a hash of site, pod and number, so that every pod's ids interleave in the federation-wide order.
 */
export function seedRows(
  site: string,
  pod: string,
  pools: Record<string, number> = DEFAULT_POOLS,
  sessions = 0,
): SeedRows {
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
  if (sessions > 0) seedSessions(rows, site, pod, sessions);
  return rows;
}

function seedSessions(rows: SeedRows, site: string, pod: string, count: number): void {
  rows.pools.push(SEEDED_SESSIONS_POOL);
  for (let i = 1; i <= count; i++) {
    const digest = createHash('sha256').update(`${site}/${pod}/session/${i}`).digest();
    const h = digest.readUInt32BE(8);
    const user = `user-${String(h % SEEDED_USERS).padStart(4, '0')}`;
    const desktopId = `${site}.${pod}.${SEEDED_SESSIONS_POOL}-${String(i).padStart(6, '0')}`;
    rows.desktops.push({ id: desktopId, pool: SEEDED_SESSIONS_POOL, state: 'assigned', user });
    rows.sessions.push({
      id: `s-${digest.subarray(0, 8).toString('hex')}`,
      desktopId,
      user,
      state: (h >> 16) % 3 === 0 ? 'disconnected' : 'connected',
      startedAt: new Date(Date.UTC(2026, 0, 1, 8, 0, (h >> 4) % 36_000)).toISOString(),
    });
  }
}
