import { status } from '@grpc/grpc-js';
import type { AttemptRecord } from '@wanas/iterator';
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
 * Runs branches in parallel and gathers one result per pod. At `deadline` it stops waiting: pods
 * without a result are marked DEADLINE_EXCEEDED and the branches still running are cancelled.
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
    let done = false;
    const finish = (why: 'complete' | 'deadline' | 'cancelled') => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      outer.removeEventListener('abort', onAbort);
      // Cancel the branches still running (none once all completed: an abort builds a DOMException with
      // a stack trace, a measurable cost when paid on every request).
      if (pending > 0) ac.abort();
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
    const onAbort = () => finish('cancelled');
    outer.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => finish('deadline'), Math.max(0, deadline - Date.now()));
    // Start the slowest first: WAN requests, then LAN requests, then the own pod (which runs inline).
    for (const b of [...branches].sort((x, y) => y.cost - x.cost)) {
      b.run(ac.signal).then(
        (prs) => {
          if (done) return;
          const latency = msToDuration(Date.now() - started);
          for (const pr of prs) {
            const r = { ...pr, latency };
            results.set(key(pr), r);
            onPod?.(r);
          }
          if (--pending === 0) finish('complete');
        },
        (e: unknown) => {
          // Branches never reject; if one does, its pods are reported, not lost.
          log.error('fan-out branch failed', { error: String(e) });
          if (done) return;
          for (const p of b.pods) {
            const r = failed(p, status.INTERNAL, 'internal error in the fan-out (see the broker log)');
            results.set(key(p), r);
            onPod?.(r);
          }
          if (--pending === 0) finish('complete');
        },
      );
    }
    if (branches.length === 0) finish('complete');
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
