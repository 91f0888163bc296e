import { status } from '@grpc/grpc-js';
import { neverReachedPeer } from '@wanas/iterator';
import type { PodResult } from '@wanas/proto';
import { key, type Leg } from '../model';
import type { Operation } from '../../operations/types';

/**
 * The order a first-fit search walks one site's pods, asked from a broker of pod `own`: a read starts with
 * that pod (no network hop); a state-changing operation keeps the topology's order, the same from every
 * broker, so a resend through another one walks the same pods (which replay what they answered).
 */
export function podOrder<P extends { pod: string }>(
  pods: readonly P[],
  own: string | undefined,
  idempotent: boolean,
): P[] {
  if (!idempotent || own === undefined) return [...pods];
  return [...pods.filter((p) => p.pod === own), ...pods.filter((p) => p.pod !== own)];
}

/**
 * What a pod's result means for the search. `won`: it answered OK. `next`: it answered "not here" (an
 * operation's `nextPodOn` code; any failure of a read): ask the next pod. `unreached`: nothing was
 * delivered (its target was down, every connection refused, the method missing), so it cannot have acted.
 * `unknown`: it may have acted (timed out, cut off after sending): ask it again with the same key. `stop`:
 * a definitive answer that is not "not here" (e.g. the key was used with other params).
 */
export type Verdict = 'won' | 'next' | 'unreached' | 'unknown' | 'stop';

/** Codes whose outcome is unknown for a state-changing request that may have been delivered. */
const UNKNOWN_OUTCOME: ReadonlySet<number> = new Set([
  status.DEADLINE_EXCEEDED,
  status.UNAVAILABLE,
  status.CANCELLED,
  status.UNKNOWN,
  status.INTERNAL,
  status.ABORTED,
]);

/** The {@link Verdict} on one pod's result for operation `op`. */
export function verdictOf(r: PodResult, op: Pick<Operation, 'idempotent' | 'nextPodOn'>): Verdict {
  if (r.code === status.OK) return 'won';
  // A read has no side effect: whatever went wrong, the next pod may answer.
  if (op.idempotent) return 'next';
  if (op.nextPodOn?.includes(r.code)) return 'next';
  const neverSent = r.attempts.every((a) => neverReachedPeer({ code: a.code, details: a.message }));
  if ((r.code === status.UNAVAILABLE && neverSent) || r.code === status.UNIMPLEMENTED) return 'unreached';
  return UNKNOWN_OUTCOME.has(r.code) ? 'unknown' : 'stop';
}

/** What the message of a pod whose outcome stayed unknown adds. */
export const OUTCOME_UNKNOWN =
  'outcome unknown (it may have acted): the search stopped here so that the request acts in at most one pod; resend with the same idempotency_key to learn the outcome';

/** Most times one leg is asked again while its outcome stays unknown. */
export const MAX_LEG_RETRIES = 3;
/** A leg is asked again only with at least this much time left, ms. */
const MIN_RETRY_TIME_MS = 20;

/** How {@link firstFit} runs. */
export interface FirstFitOptions {
  op: Pick<Operation, 'idempotent' | 'nextPodOn'>;
  /** Runs one leg; resolves with the results of the pods it asked, in the order asked (never rejects). */
  run(leg: Leg): Promise<PodResult[]>;
  /** Epoch ms of the overall deadline. */
  deadline: number;
  /** The caller's cancel. */
  signal: AbortSignal;
  /** A leg's pods' results once the leg is over (final: every round's attempts, the verdict's note). */
  onLegDone?: (results: PodResult[]) => void;
  now?: () => number;
}

/**
 * Runs a first-fit search: the legs one after another until a pod answers OK. A leg whose outcome is
 * unknown is asked again, with the same idempotency key, up to {@link MAX_LEG_RETRIES} times while time is
 * left (pods store every outcome under the key, so the resend replays, never acts twice). Once a leg's
 * outcome has been unknown, a later round that reaches nothing (its site found down meanwhile) does not
 * clear the doubt. If it stays unknown the search stops there, saying so ({@link OUTCOME_UNKNOWN}), rather
 * than risk acting in a second pod. Resolves with every pod asked, once, in the order first asked; the
 * winner, if any, is last.
 */
export async function firstFit(legs: readonly Leg[], opts: FirstFitOptions): Promise<PodResult[]> {
  const now = opts.now ?? Date.now;
  const tried = new Map<string, PodResult>();
  for (const leg of legs) {
    if (opts.signal.aborted) break;
    const { verdict, results } = await askLeg(leg, opts, tried, now);
    const last = results.at(-1);
    if (verdict === 'unknown' && last) {
      const r = tried.get(key(last))!;
      tried.set(key(last), {
        ...r,
        message: r.message ? `${r.message}; ${OUTCOME_UNKNOWN}` : OUTCOME_UNKNOWN,
      });
    }
    opts.onLegDone?.(results.map((r) => tried.get(key(r))!));
    if (verdict !== 'next' && verdict !== 'unreached') break;
  }
  return [...tried.values()];
}

/** Asks one leg until its outcome is known (or the retries or the time run out); records every pod in `tried`. */
async function askLeg(
  leg: Leg,
  opts: FirstFitOptions,
  tried: Map<string, PodResult>,
  now: () => number,
): Promise<{ verdict: Verdict; results: PodResult[] }> {
  let doubt = false;
  for (let round = 0; ; round++) {
    const results = await opts.run(leg);
    for (const r of results) {
      const before = tried.get(key(r));
      // One line per pod, with every attempt made to it across rounds.
      tried.set(key(r), before ? { ...r, attempts: [...before.attempts, ...r.attempts] } : r);
    }
    const last = results.at(-1);
    let verdict: Verdict = last ? verdictOf(last, opts.op) : 'unreached';
    if (verdict === 'unreached' && doubt) verdict = 'unknown';
    doubt ||= verdict === 'unknown';
    const out = opts.deadline - now() < MIN_RETRY_TIME_MS || opts.signal.aborted;
    if (verdict !== 'unknown' || round >= MAX_LEG_RETRIES || out) return { verdict, results };
  }
}
