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
  return new FanOut(log, branches, opts).run();
}

/**
 * Where a fan-out stands. `running`: branches at work. `closing`: aborted at the deadline, taking the
 * cut-off branches' reports until the next macrotask. `done`: answered; later reports are ignored.
 */
type FanOutPhase = 'running' | 'closing' | 'done';

/** One {@link collect}: its phase ({@link FanOutPhase}, changed only by `transition`), results and tally. */
class FanOut {
  private phase: FanOutPhase = 'running';
  private readonly order: PodRef[];
  private readonly results = new Map<string, PodResult>();
  private readonly tally: Tally;
  private readonly ac = new AbortController();
  private pending: number;
  private timer: NodeJS.Timeout | undefined;
  private resolve!: (results: PodResult[]) => void;
  private readonly onAbort = () => this.handleCancel();

  constructor(
    private readonly log: Logger,
    private readonly branches: Branch[],
    private readonly opts: CollectOptions,
  ) {
    this.order = branches.flatMap((b) => b.pods);
    this.pending = branches.length;
    const { rule } = opts;
    this.tally = {
      total: this.order.length,
      ok: 0,
      failed: 0,
      requiredLeft: rule ? this.order.filter((p) => rule.required(p)).length : 0,
      requiredFailed: undefined,
    };
  }

  run(): Promise<PodResult[]> {
    return new Promise((resolve) => {
      this.resolve = resolve;
      this.opts.signal.addEventListener('abort', this.onAbort, { once: true });
      this.timer = setTimeout(() => this.handleDeadline(), Math.max(0, this.opts.deadline - Date.now()));
      // Start the slowest first: WAN requests, then LAN requests, then the own pod (which runs inline).
      for (const b of [...this.branches].sort((x, y) => y.cost - x.cost)) this.start(b);
      if (this.branches.length === 0) this.settle((p) => this.unanswered(p));
    });
  }

  private start(b: Branch): void {
    b.run(this.ac.signal, (prs) => {
      if (this.phase !== 'done') this.record(prs);
    }).then(
      (prs) => this.handleBranchDone(prs),
      (e: unknown) => {
        // Branches never reject; if one does, its pods are reported, not lost.
        this.log.error('fan-out branch failed', { error: String(e) });
        this.handleBranchDone(
          b.pods.map((p) => failed(p, status.INTERNAL, 'internal error in the fan-out (see the broker log)')),
        );
      },
    );
  }

  /** The one place the phase changes; `done` stops the deadline timer and the cancel listener. */
  private transition(to: FanOutPhase): void {
    this.phase = to;
    if (to !== 'done') return;
    clearTimeout(this.timer);
    this.opts.signal.removeEventListener('abort', this.onAbort);
  }

  /** A branch finished: its pods are recorded; when it was the last one, the answer is complete. */
  private handleBranchDone(prs: PodResult[]): void {
    if (this.phase === 'done' || this.record(prs)) return;
    // Every branch answered; a pod one of them left out counts as unanswered in time.
    if (--this.pending === 0) this.settle((p) => this.unanswered(p));
  }

  private handleDeadline(): void {
    if (this.phase !== 'running') return;
    this.transition('closing');
    // Aborting settles the iterators synchronously; their branches report in microtasks, before
    // setImmediate runs (an abort builds no stack trace: DEADLINE_REACHED is one shared instance).
    this.ac.abort(DEADLINE_REACHED);
    setImmediate(() => this.settle((p) => this.unanswered(p)));
  }

  private handleCancel(): void {
    if (this.pending > 0) this.ac.abort(this.opts.signal.reason);
    this.settle((p) => failed(p, status.CANCELLED, 'the caller cancelled the request'));
  }

  /** Records the pods' results (a pod's first one counts); true when the rule decided the answer. */
  private record(prs: PodResult[]): boolean {
    const { rule, onPod } = this.opts;
    const latency = msToDuration(Date.now() - this.opts.started);
    for (const pr of prs) {
      if (this.results.has(key(pr))) continue;
      const r = { ...pr, latency };
      this.results.set(key(pr), r);
      onPod?.(r);
      if (r.code === 0) this.tally.ok++;
      else this.tally.failed++;
      if (rule?.required(r)) {
        this.tally.requiredLeft--;
        if (r.code !== 0) this.tally.requiredFailed ??= r;
      }
    }
    const early = this.phase === 'running' ? rule?.check(this.tally) : undefined;
    if (!early) return false;
    this.ac.abort(NOT_NEEDED);
    this.settle((p) => failed(p, early.code, early.message));
    return true;
  }

  /** Answers once: every pod's result, in order, `missing` filling the pods without one. */
  private settle(missing: (p: PodRef) => PodResult): void {
    if (this.phase === 'done') return;
    this.transition('done');
    this.resolve(
      this.order.map((p) => {
        const r = this.results.get(key(p));
        if (r) return r;
        const m = missing(p);
        this.opts.onPod?.(m);
        return m;
      }),
    );
  }

  private unanswered(p: PodRef): PodResult {
    const waited = Date.now() - this.opts.started;
    return failed(p, status.DEADLINE_EXCEEDED, `no answer within the overall deadline (${waited} ms)`);
  }
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
