import { status } from '@grpc/grpc-js';
import { z } from 'zod';
import { BrokerError } from '../errors';
import { sleep } from './abortable';
import { keyConflict } from '../ledger/ledger';
import { StoreBusyError } from '../store/sqlite-inventory';
import { OperationRegistry } from './registry';
import type { JsonObject, Operation, PodOutcome } from './types';

const userName = z
  .string()
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(/^[A-Za-z0-9._@-]+$/, 'may hold letters, digits and . _ @ - only');

function okResults(results: PodOutcome[]): PodOutcome[] {
  return results.filter((r) => r.code === 0 && r.result);
}

/** `sessions.find {user}`: the user's desktops and sessions in each pod; reduced: the total and the list. */
export const sessionsFind: Operation<{ user: string }> = {
  name: 'sessions.find',
  info: { kind: 'builtin' },
  description: "a user's desktops and sessions in every pod",
  idempotent: true,
  params: z.strictObject({ user: userName }),
  execute: async ({ user }, ctx) => {
    const { desktops, sessions } = await ctx.store.findUser(user, ctx.deadline, ctx.signal);
    return { user, desktops, sessions, count: sessions.length } as unknown as JsonObject;
  },
  reduce: (results) => {
    const sessions: JsonObject[] = [];
    for (const r of okResults(results)) {
      for (const s of (r.result!.sessions as JsonObject[] | undefined) ?? []) {
        sessions.push({ site: r.site, pod: r.pod, ...s });
      }
    }
    return { total: sessions.length, sessions };
  },
};

/**
 * `sessions.list {user?, state?}`: every session of the federation (or of a scope), paged in session id
 * order (`page_size`, `page_token`); its `reduced` holds the page's sessions with their site and pod.
 */
export const sessionsList: Operation<{
  user?: string | undefined;
  state?: 'connected' | 'disconnected' | undefined;
}> = {
  name: 'sessions.list',
  info: { kind: 'builtin' },
  description: 'every session, paged in session id order (page_size, page_token)',
  idempotent: true,
  params: z.strictObject({
    user: userName.optional(),
    state: z.enum(['connected', 'disconnected']).optional(),
  }),
  page: { items: 'sessions', key: 'id' },
  execute: async ({ user, state }, ctx) => {
    const page = ctx.page ?? { after: '', limit: 0 };
    const sessions = await ctx.store.listSessions({ ...page, user, state }, ctx.deadline, ctx.signal);
    return { sessions } as unknown as JsonObject;
  },
};

/** `pods.capacity {}`: desktops total / free / in use per pod; reduced: the federation's sums. */
export const podsCapacity: Operation<Record<string, never>> = {
  name: 'pods.capacity',
  info: { kind: 'builtin' },
  description: 'desktops total / free / in use per pod, and federation-wide',
  idempotent: true,
  // A dashboard's poll: a client that sets max_staleness may be answered from the entry's cache.
  cache: { maxAge: '2s' },
  params: z.strictObject({}),
  execute: async (_p, ctx) => (await ctx.store.capacity(ctx.deadline, ctx.signal)) as unknown as JsonObject,
  reduce: (results) => {
    const sum = { total: 0, free: 0, inUse: 0, pods: 0 };
    for (const r of okResults(results)) {
      sum.total += Number(r.result!.total ?? 0);
      sum.free += Number(r.result!.free ?? 0);
      sum.inUse += Number(r.result!.inUse ?? 0);
      sum.pods++;
    }
    return sum;
  },
};

/**
 * `desktops.provision {user, pool}`: assigns a free desktop of the pool to the user in each pod in scope
 * (normally one pod, given by `scope`). Changes state: requires an idempotency key and runs at most once
 * per key in each pod, however often failover or hedging resends it.
 */
export const desktopsProvision: Operation<{ user: string; pool: string }> = {
  name: 'desktops.provision',
  info: { kind: 'builtin' },
  description: 'assign a free desktop of a pool to a user (state-changing; needs an idempotency key)',
  idempotent: false,
  params: z.strictObject({
    user: userName,
    pool: z
      .string()
      .regex(/^[a-z0-9-]{1,63}$/, 'must be a pool name such as "standard"')
      .default('standard'),
  }),
  execute: async (params, ctx) => {
    const out = await ctx.store
      .provisionOnce({
        key: ctx.idempotencyKey,
        user: params.user,
        pool: params.pool,
        brokerId: ctx.brokerId,
        deadline: ctx.deadline,
        signal: ctx.signal,
      })
      .catch((e: unknown) => {
        // Nothing was written: the write is safe to send again (to this pod) once the lock is free.
        if (e instanceof StoreBusyError) throw new BrokerError(status.UNAVAILABLE, e.message);
        throw e;
      });
    if ('refused' in out) throw new BrokerError(out.refused.code, out.refused.message);
    if ('conflict' in out) throw keyConflict(out.conflict.operation);
    return { ...out.result, replayed: out.replayed };
  },
  reduce: (results) => ({ provisioned: okResults(results).length }),
  nextPodOn: [status.RESOURCE_EXHAUSTED, status.NOT_FOUND],
};

/** `echo {}`: the params back with the answering site, pod and broker (for operators and tests). */
export const echo: Operation<JsonObject> = {
  name: 'echo',
  info: { kind: 'builtin' },
  description: 'the params back, with the answering site, pod and broker',
  idempotent: true,
  params: z.record(z.string(), z.unknown()).superRefine((p, ctx) => {
    const sleep = p.sleepMs;
    if (sleep !== undefined && !(typeof sleep === 'number' && sleep >= 0 && sleep <= 60_000)) {
      ctx.addIssue({ code: 'custom', path: ['sleepMs'], message: 'must be a number of ms from 0 to 60000' });
    }
  }) as unknown as z.ZodType<JsonObject>,
  execute: async (params, ctx) => {
    // `sleepMs` (optionally only in `sleepPod`) lets operators and tests make a pod slow on purpose.
    const sleepMs = typeof params.sleepMs === 'number' ? params.sleepMs : 0;
    const onlyPod = typeof params.sleepPod === 'string' ? params.sleepPod : undefined;
    if (sleepMs > 0 && (!onlyPod || onlyPod === ctx.pod || onlyPod === `${ctx.site}/${ctx.pod}`)) {
      const leftMs = Math.max(0, ctx.deadline - Date.now());
      // Cut off by the deadline: say so (an OK at the deadline would race the caller's own timeout).
      if (sleepMs > leftMs) {
        await sleep(leftMs, ctx.signal);
        throw new BrokerError(
          status.DEADLINE_EXCEEDED,
          `asked to sleep ${sleepMs} ms; the deadline left ${leftMs} ms`,
        );
      }
      await sleep(sleepMs, ctx.signal);
    }
    return { params, site: ctx.site, pod: ctx.pod, broker: ctx.brokerId, headers: ctx.headers };
  },
  reduce: (results) => ({ answered: okResults(results).length }),
};

/** A registry with the built-in operations. */
export function builtinOperations(): OperationRegistry {
  return new OperationRegistry()
    .register(sessionsFind)
    .register(sessionsList)
    .register(podsCapacity)
    .register(desktopsProvision)
    .register(echo);
}
