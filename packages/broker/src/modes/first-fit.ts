import { status } from '@grpc/grpc-js';
import { neverReachedPeer } from '@wanas/iterator';
import type { PodResult } from '@wanas/proto';
import { key, type PodRef } from '../fan-out';
import type { Operation } from '../operations/types';

/**
 * One step of a first-fit search: this broker's own pod, another pod of its site (one LocalRequest), or
 * a remote site (one SiteRequest: its representative searches the site's pods over its own LAN).
 */
export interface SearchStep {
  via: 'own' | 'local' | 'site';
  site: string;
  /** The pods the step may ask: one, or a remote site's pods in scope. */
  pods: PodRef[];
}

/**
 * The order of a first-fit search from the entry broker `self` over the pods in scope: the preferred
 * sites in the order given, then the entry's own site, then every other site nearest first (by
 * `distanceMs`, the measured latency to a site; unmeasured sites last, then in topology order). Within
 * the entry's site, its own pod first when `ownPodFirst`; otherwise (a state-changing operation) in
 * topology order, so that a resend through another broker of the site walks the same pods.
 */
export function searchSteps(
  self: PodRef,
  scoped: readonly PodRef[],
  preferSites: readonly string[],
  distanceMs: (site: string) => number | undefined,
  ownPodFirst = true,
): SearchStep[] {
  const sites = [...new Set(scoped.map((p) => p.site))];
  const rest = sites
    .filter((s) => s !== self.site && !preferSites.includes(s))
    .map((s, i) => ({ s, i, d: distanceMs(s) ?? Infinity }))
    .sort((a, b) => a.d - b.d || a.i - b.i)
    .map((x) => x.s);
  const ordered = [...preferSites, ...(preferSites.includes(self.site) ? [] : [self.site]), ...rest];
  return ordered.flatMap((site): SearchStep[] => {
    const pods = scoped.filter((p) => p.site === site);
    if (pods.length === 0) return [];
    if (site !== self.site) return [{ via: 'site', site, pods }];
    const own = pods.filter((p) => p.pod === self.pod);
    const ordered = ownPodFirst ? [...own, ...pods.filter((p) => p.pod !== self.pod)] : pods;
    return ordered.map((p): SearchStep => ({ via: p.pod === self.pod ? 'own' : 'local', site, pods: [p] }));
  });
}

/**
 * What a pod's result means for the search. `won`: it answered OK. `next`: it surely did not act, ask the
 * next pod. `retry`: its outcome is unknown (a state-changing operation may have acted: timed out, cut
 * off), ask the same pod again with the same key. `stop`: a definitive answer that is not "not here"
 * (e.g. the key was used with other params), so the search ends with it.
 */
export type Verdict = 'won' | 'next' | 'retry' | 'stop';

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
  // Nothing was delivered: the pod's target was down (no attempt), or no connection could be made.
  if (
    r.code === status.UNAVAILABLE &&
    r.attempts.every((a) => neverReachedPeer({ code: a.code, details: a.message }))
  )
    return 'next';
  // The method was not there (a representative of an older version): nothing ran.
  if (r.code === status.UNIMPLEMENTED) return 'next';
  return UNKNOWN_OUTCOME.has(r.code) ? 'retry' : 'stop';
}

/** Most times one step is asked again while its outcome stays unknown. */
export const MAX_STEP_RETRIES = 3;
/** A step is asked again only with at least this much time left, ms. */
const MIN_RETRY_TIME_MS = 20;

/** How {@link firstFit} runs. */
export interface FirstFitOptions {
  op: Pick<Operation, 'idempotent' | 'nextPodOn'>;
  /** Runs one step; resolves with the results of the pods it asked, in the order asked (never rejects). */
  run(step: SearchStep): Promise<PodResult[]>;
  /** Epoch ms of the overall deadline. */
  deadline: number;
  /** The caller's cancel. */
  signal: AbortSignal;
  /** Each pod's result once the step that asked it is over. */
  onPod?: (pod: PodResult) => void;
  now?: () => number;
}

/**
 * Runs a first-fit search: the steps one after another until a pod answers OK. A step whose last pod's
 * outcome is unknown is asked again, with the same idempotency key, up to {@link MAX_STEP_RETRIES} times
 * while time is left (pods store every outcome under the key, so the resend replays, never acts twice);
 * if it stays unknown the search stops there rather than risk acting in a second pod. Resolves with every
 * pod asked, once, in the order first asked; the winner, if any, is last.
 */
export async function firstFit(steps: readonly SearchStep[], o: FirstFitOptions): Promise<PodResult[]> {
  const now = o.now ?? Date.now;
  const tried = new Map<string, PodResult>();
  for (const step of steps) {
    let verdict: Verdict = 'next';
    let stepResults: PodResult[] = [];
    for (let round = 0; ; round++) {
      if (o.signal.aborted) return [...tried.values()];
      stepResults = await o.run(step);
      for (const r of stepResults) {
        const before = tried.get(key(r));
        // One line per pod, with every attempt made to it across rounds.
        tried.set(key(r), before ? { ...r, attempts: [...before.attempts, ...r.attempts] } : r);
      }
      const last = stepResults[stepResults.length - 1];
      verdict = last ? verdictOf(last, o.op) : 'next';
      const timeLeft = o.deadline - now();
      if (verdict !== 'retry' || round >= MAX_STEP_RETRIES || timeLeft < MIN_RETRY_TIME_MS) break;
    }
    for (const r of stepResults) o.onPod?.(tried.get(key(r))!);
    if (verdict !== 'next') break;
  }
  return [...tried.values()];
}
