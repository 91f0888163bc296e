import { status } from '@grpc/grpc-js';
import { DEADLINE_REACHED, type AttemptRecord } from '@wanas/iterator';
import { codeName, msToDuration, type AggregateResponse, type Attempt, type PodResult } from '@wanas/proto';
import type { Logger } from 'winston';

/** A pod of the federation. */
export interface PodRef {
  site: string;
  pod: string;
}

/** One fan-out branch: the pods it answers for, and how to get their results (never rejects). */
export interface Branch {
  pods: PodRef[];
  /** Rough cost rank for start order: 2 WAN, 1 LAN, 0 in-process. */
  cost: number;
  run(signal: AbortSignal): Promise<PodResult[]>;
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

/**
 * Runs branches in parallel and gathers one result per pod. At `deadline` it stops waiting: the branches
 * still running are aborted with {@link DEADLINE_REACHED}, which makes them report their pods at once as
 * DEADLINE_EXCEEDED with the attempts they made (cut off ones included); a pod whose branch could not say
 * even that is marked DEADLINE_EXCEEDED without attempts. When `outer` is aborted (the caller cancelled),
 * every branch is aborted with the caller's reason and the pods still waiting are CANCELLED.
 */
export function collect(
  log: Logger,
  branches: Branch[],
  deadline: number,
  started: number,
  outer: AbortSignal,
  onPod?: (pod: PodResult) => void,
): Promise<PodResult[]> {
  const order = branches.flatMap((b) => b.pods);
  const results = new Map<string, PodResult>();
  const ac = new AbortController();
  return new Promise<PodResult[]>((resolve) => {
    let pending = branches.length;
    /** 'closing': aborted at the deadline, taking the cut-off branches' reports until the next macrotask. */
    let phase: 'running' | 'closing' | 'done' = 'running';
    const settle = (why: 'complete' | 'deadline' | 'cancelled') => {
      if (phase === 'done') return;
      phase = 'done';
      clearTimeout(timer);
      outer.removeEventListener('abort', onAbort);
      const waited = Date.now() - started;
      resolve(
        order.map((p) => {
          const r = results.get(key(p));
          if (r) return r;
          const missing =
            why === 'cancelled'
              ? failed(p, status.CANCELLED, 'the caller cancelled the request')
              : failed(p, status.DEADLINE_EXCEEDED, `no answer within the overall deadline (${waited} ms)`);
          onPod?.(missing);
          return missing;
        }),
      );
    };
    const onAbort = () => {
      if (pending > 0) ac.abort(outer.reason);
      settle('cancelled');
    };
    outer.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(
      () => {
        if (phase !== 'running') return;
        phase = 'closing';
        // Aborting settles the iterators synchronously; their branches report in microtasks, before
        // setImmediate runs (an abort builds no stack trace: DEADLINE_REACHED is one shared instance).
        ac.abort(DEADLINE_REACHED);
        setImmediate(() => settle('deadline'));
      },
      Math.max(0, deadline - Date.now()),
    );
    const accept = (prs: PodResult[]) => {
      const latency = msToDuration(Date.now() - started);
      for (const pr of prs) {
        const r = { ...pr, latency };
        results.set(key(pr), r);
        onPod?.(r);
      }
      if (--pending === 0) settle(phase === 'closing' ? 'deadline' : 'complete');
    };
    // Start the slowest first: WAN requests, then LAN requests, then the own pod (which runs inline).
    for (const b of [...branches].sort((x, y) => y.cost - x.cost)) {
      b.run(ac.signal).then(
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
    if (branches.length === 0) settle('complete');
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
