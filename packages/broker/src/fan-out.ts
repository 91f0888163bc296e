import { status } from '@grpc/grpc-js';
import { DEADLINE_REACHED, type AttemptRecord } from '@wanas/iterator';
import { codeName, msToDuration, type AggregateResponse, type Attempt, type PodResult } from '@wanas/proto';
import type { Logger } from 'winston';
import type { CompletionRule, Tally } from './modes/completion';

/** A pod of the federation. */
export interface PodRef {
  site: string;
  pod: string;
}

/**
 * Where one leg of a request goes: this broker's own pod (in-process), another pod of its site (one
 * LocalRequest), or a remote site (one SiteRequest; its representative asks the site's pods over its LAN).
 * A MODE_ALL request runs its legs at once; a first-fit search one after another.
 */
export interface Leg {
  via: 'own' | 'local' | 'site';
  site: string;
  /** The pods the leg answers for: one, or a remote site's pods in scope. */
  pods: PodRef[];
}

/**
 * One fan-out branch: the pods it answers for, and how to get their results (never rejects). A branch may
 * `report` some pods' results early (a streamed SiteRequest, pod by pod); a pod's first result counts.
 */
export interface Branch {
  pods: PodRef[];
  /** Rough cost rank for start order: 2 WAN, 1 LAN, 0 in-process. */
  cost: number;
  run(signal: AbortSignal, report: (results: PodResult[]) => void): Promise<PodResult[]>;
}

export const key = (p: PodRef) => `${p.site}/${p.pod}`;

export function attemptToProto(a: AttemptRecord): Attempt {
  return {
    brokerId: a.brokerId,
    address: a.address,
    code: a.code,
    message: a.message,
    latency: msToDuration(a.latencyMs),
    hedged: a.hedged,
  };
}

export function failed(p: PodRef, code: number, message: string, attempts: Attempt[] = []): PodResult {
  return {
    site: p.site,
    pod: p.pod,
    code,
    message,
    result: undefined,
    answeredBy: '',
    attempts,
    latency: undefined,
  };
}

/** How {@link collect} runs a fan-out. */
export interface CollectOptions {
  /** Epoch ms at which it stops waiting. */
  deadline: number;
  /** Epoch ms the request started (pod latencies count from it). */
  started: number;
  /** The caller's cancel. */
  signal: AbortSignal;
  /** Each pod's result as soon as it is final. */
  onPod?: (pod: PodResult) => void;
  /** When it may answer before every pod has (min_ok, required sites); unset: waits for all. */
  rule?: CompletionRule;
}

/** One shared abort reason for branches no longer needed (an early answer). */
const NOT_NEEDED = new Error('the answer was decided without this branch');

/**
 * Runs branches in parallel and gathers one result per pod. At `deadline` it stops waiting: the branches
 * still running are aborted with {@link DEADLINE_REACHED}, which makes them report their pods at once as
 * DEADLINE_EXCEEDED with the attempts they made (cut off ones included); a pod whose branch could not say
 * even that is marked DEADLINE_EXCEEDED without attempts. When the caller cancels, every branch is aborted
 * with the caller's reason and the pods still waiting are CANCELLED. When the `rule` decides early, the
 * branches still running are cancelled and their pods get the rule's status.
 */
export function collect(log: Logger, branches: Branch[], opts: CollectOptions): Promise<PodResult[]> {
  const { deadline, started, signal: outer, onPod, rule } = opts;
  const order = branches.flatMap((b) => b.pods);
  const results = new Map<string, PodResult>();
  const tally: Tally = {
    total: order.length,
    ok: 0,
    failed: 0,
    requiredLeft: rule ? order.filter((p) => rule.required(p)).length : 0,
    requiredFailed: undefined,
  };
  const ac = new AbortController();
  return new Promise<PodResult[]>((resolve) => {
    let pending = branches.length;
    /** 'closing': aborted at the deadline, taking the cut-off branches' reports until the next macrotask. */
    let phase: 'running' | 'closing' | 'done' = 'running';
    const settle = (missing: (p: PodRef) => PodResult) => {
      if (phase === 'done') return;
      phase = 'done';
      clearTimeout(timer);
      outer.removeEventListener('abort', onAbort);
      resolve(
        order.map((p) => {
          const r = results.get(key(p));
          if (r) return r;
          const m = missing(p);
          onPod?.(m);
          return m;
        }),
      );
    };
    const byDeadline = (p: PodRef) =>
      failed(
        p,
        status.DEADLINE_EXCEEDED,
        `no answer within the overall deadline (${Date.now() - started} ms)`,
      );
    const onAbort = () => {
      if (pending > 0) ac.abort(outer.reason);
      settle((p) => failed(p, status.CANCELLED, 'the caller cancelled the request'));
    };
    outer.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(
      () => {
        if (phase !== 'running') return;
        phase = 'closing';
        // Aborting settles the iterators synchronously; their branches report in microtasks, before
        // setImmediate runs (an abort builds no stack trace: DEADLINE_REACHED is one shared instance).
        ac.abort(DEADLINE_REACHED);
        setImmediate(() => settle(byDeadline));
      },
      Math.max(0, deadline - Date.now()),
    );
    /** Records the pods' results (a pod's first one counts); true when the rule decided the answer. */
    const record = (prs: PodResult[]): boolean => {
      const latency = msToDuration(Date.now() - started);
      for (const pr of prs) {
        if (results.has(key(pr))) continue;
        const r = { ...pr, latency };
        results.set(key(pr), r);
        onPod?.(r);
        if (r.code === 0) tally.ok++;
        else tally.failed++;
        if (rule?.required(r)) {
          tally.requiredLeft--;
          if (r.code !== 0) tally.requiredFailed ??= r;
        }
      }
      const early = phase === 'running' ? rule?.check(tally) : undefined;
      if (!early) return false;
      ac.abort(NOT_NEEDED);
      settle((p) => failed(p, early.code, early.message));
      return true;
    };
    const report = (prs: PodResult[]) => {
      if (phase !== 'done') record(prs);
    };
    const accept = (prs: PodResult[]) => {
      if (record(prs)) return;
      // Every branch answered; a pod one of them left out counts as unanswered in time.
      if (--pending === 0) settle(byDeadline);
    };
    // Start the slowest first: WAN requests, then LAN requests, then the own pod (which runs inline).
    for (const b of [...branches].sort((x, y) => y.cost - x.cost)) {
      b.run(ac.signal, report).then(
        (prs) => {
          if (phase !== 'done') accept(prs);
        },
        (e: unknown) => {
          // Branches never reject; if one does, its pods are reported, not lost.
          log.error('fan-out branch failed', { error: String(e) });
          if (phase === 'done') return;
          accept(
            b.pods.map((p) =>
              failed(p, status.INTERNAL, 'internal error in the fan-out (see the broker log)'),
            ),
          );
        },
      );
    }
    if (branches.length === 0) settle(byDeadline);
  });
}

/** Pods asked / ok / failed, and failures by code name. */
export function summarize(results: PodResult[]): AggregateResponse['summary'] {
  const failedByCode: Record<string, number> = {};
  let ok = 0;
  for (const r of results) {
    if (r.code === 0) ok++;
    else failedByCode[codeName(r.code)] = (failedByCode[codeName(r.code)] ?? 0) + 1;
  }
  return { podsAsked: results.length, podsOk: ok, podsFailed: results.length - ok, failedByCode };
}
