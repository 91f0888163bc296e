/**
 * The one executor: runs a {@link Plan}'s legs — all at once, or first-fit one after another — and gathers
 * one result per pod asked, under one deadline and the caller's cancel. It decides nothing the plan has not:
 * it sends (through `runLeg`), collects and answers once.
 */
import { status } from '@grpc/grpc-js';
import { DEADLINE_REACHED } from '@wanas/iterator';
import { msToDuration, type PodResult } from '@wanas/proto';
import { firstFit } from './modes/first-fit';
import { failed, key, type Leg, type Plan, type PodRef, type Tally } from './model';

/** Runs one leg; resolves with its pods' results (never rejects). It may `report` some pods early. */
export type RunLeg = (
  leg: Leg,
  signal: AbortSignal,
  report: (results: PodResult[]) => void,
) => Promise<PodResult[]>;

/** What one execution needs besides the plan. */
export interface ExecuteOptions {
  runLeg: RunLeg;
  /** The caller's cancel. */
  signal: AbortSignal;
  /** Each pod's result as soon as it is final. */
  onPod?: (pod: PodResult) => void;
  /** Where a leg that broke its promise (it rejected) is told. */
  onLegError?: (e: unknown) => void;
  /** Clock (epoch ms), injectable for tests; timers are the global ones (fake them in tests). */
  now?: () => number;
}

/**
 * Executes a plan; resolves with every pod asked, once, in the order asked. At the plan's deadline it
 * stops waiting: the legs still running are aborted with {@link DEADLINE_REACHED}, which makes them report
 * their pods at once as DEADLINE_EXCEEDED with the attempts they made; a pod whose leg could not say even
 * that is DEADLINE_EXCEEDED without attempts. When the caller cancels, every leg is aborted with the
 * caller's reason and the pods still waiting are CANCELLED. When the completion rule decides early, the
 * legs still running are cancelled and their pods get the rule's status.
 */
export function execute(plan: Plan, opts: ExecuteOptions): Promise<PodResult[]> {
  return new Execution(plan, opts).run();
}

/**
 * Where an execution stands. `running`: legs at work. `closing`: aborted at the deadline, taking the
 * cut-off legs' reports until the next macrotask. `done`: answered; later reports are ignored.
 */
export type ExecutionPhase = 'running' | 'closing' | 'done';

/** One shared abort reason for legs no longer needed (an early answer). */
const NOT_NEEDED = new Error('the answer was decided without this leg');

/** One {@link execute}: its phase (changed only by `transition`), the pods asked, their results and tally. */
class Execution {
  private phase: ExecutionPhase = 'running';
  /** Pods in the order asked: every leg's at once (all), or as each leg's results come (first). */
  private readonly asked: PodRef[] = [];
  private readonly results = new Map<string, PodResult>();
  private readonly tally: Tally = { total: 0, ok: 0, failed: 0, requiredLeft: 0, requiredFailed: undefined };
  private readonly ac = new AbortController();
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  /** First-fit: the leg running now. */
  private inFlight: Leg | undefined;
  private resolve!: (results: PodResult[]) => void;
  private readonly onAbort = () => this.handleCancel();

  constructor(
    private readonly plan: Plan,
    private readonly opts: ExecuteOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  run(): Promise<PodResult[]> {
    return new Promise((resolve) => {
      this.resolve = resolve;
      if (this.opts.signal.aborted) return this.handleCancel();
      this.opts.signal.addEventListener('abort', this.onAbort, { once: true });
      this.timer = setTimeout(() => this.handleDeadline(), Math.max(0, this.plan.deadline - this.now()));
      if (this.plan.schedule.kind === 'all') this.runAll();
      else this.runFirst();
    });
  }

  /** Every leg at once, the slowest first: WAN requests, then LAN requests, then the own pod (inline). */
  private runAll(): void {
    const { legs, schedule } = this.plan;
    const rule = schedule.kind === 'all' ? schedule.rule : undefined;
    for (const leg of legs) this.asked.push(...leg.pods);
    this.tally.total = this.asked.length;
    this.tally.requiredLeft = rule ? this.asked.filter((p) => rule.required(p)).length : 0;
    let pending = legs.length;
    if (pending === 0) return this.answerOnce((p) => this.unanswered(p));
    const cost = { site: 2, local: 1, own: 0 };
    for (const leg of [...legs].sort((x, y) => cost[y.via] - cost[x.via])) {
      this.start(leg, (prs) => {
        if (this.phase === 'done' || this.record(prs)) return;
        // Every leg answered; a pod one of them left out counts as unanswered in time.
        if (--pending === 0) this.answerOnce((p) => this.unanswered(p));
      });
    }
  }

  /**
   * One leg after another (see `modes/first-fit.ts`); each leg's pods are final when the leg is over, and
   * listed as they come: a remote site's leg lists the pods its representative tried, not every pod named.
   */
  private runFirst(): void {
    const run = (leg: Leg) =>
      new Promise<PodResult[]>((resolve) => {
        this.inFlight = leg;
        this.start(leg, (prs) => {
          this.inFlight = undefined;
          resolve(prs);
        });
      });
    void firstFit(this.plan.legs, {
      op: this.plan.op,
      run,
      deadline: this.plan.deadline,
      signal: this.ac.signal,
      now: this.now,
      onLegDone: (prs) => {
        if (this.phase === 'done') return;
        for (const p of prs) if (!this.results.has(key(p))) this.asked.push(p);
        this.record(prs);
      },
    }).then(() => this.answerOnce((p) => this.unanswered(p)));
  }

  /** Starts a leg; `done` gets its results (a leg that rejects has its pods reported, not lost). */
  private start(leg: Leg, done: (results: PodResult[]) => void): void {
    this.opts
      .runLeg(leg, this.ac.signal, (prs) => {
        if (this.phase !== 'done' && this.plan.schedule.kind === 'all') this.record(prs);
      })
      .then(done, (e: unknown) => {
        this.opts.onLegError?.(e);
        done(
          leg.pods.map((p) =>
            failed(p, status.INTERNAL, 'internal error in the fan-out (see the broker log)'),
          ),
        );
      });
  }

  /** The one place the phase changes; `done` stops the deadline timer and the cancel listener. */
  private transition(to: ExecutionPhase): void {
    this.phase = to;
    if (to !== 'done') return;
    clearTimeout(this.timer);
    this.opts.signal.removeEventListener('abort', this.onAbort);
  }

  private handleDeadline(): void {
    if (this.phase !== 'running') return;
    this.transition('closing');
    // Aborting ends the iterators synchronously; their legs report in microtasks, before setImmediate
    // runs (an abort builds no stack trace: DEADLINE_REACHED is one shared instance).
    this.ac.abort(DEADLINE_REACHED);
    setImmediate(() => this.answerOnce((p) => this.unanswered(p)));
  }

  private handleCancel(): void {
    this.ac.abort(this.opts.signal.reason);
    this.answerOnce((p) => failed(p, status.CANCELLED, 'the caller cancelled the request'));
  }

  /**
   * Records the pods' results, each stamped with the time since the request started (a pod's first result
   * counts); true when the completion rule decided the answer.
   */
  private record(prs: PodResult[]): boolean {
    const { schedule } = this.plan;
    const rule = schedule.kind === 'all' ? schedule.rule : undefined;
    const latency = msToDuration(this.now() - this.plan.started);
    for (const pr of prs) {
      if (this.results.has(key(pr))) continue;
      const r = { ...pr, latency };
      this.results.set(key(pr), r);
      this.opts.onPod?.(r);
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
    this.answerOnce((p) => failed(p, early.code, early.message));
    return true;
  }

  /**
   * Answers once: every pod asked, in order, `missing` filling the pods without a result (first-fit: the
   * pods of a leg cut off before it could say anything).
   */
  private answerOnce(missing: (p: PodRef) => PodResult): void {
    if (this.phase === 'done') return;
    this.transition('done');
    const cut = this.inFlight?.pods ?? [];
    if (!cut.some((p) => this.results.has(key(p)))) this.asked.push(...cut);
    this.resolve(
      this.asked.map((p) => {
        const r = this.results.get(key(p));
        if (r) return r;
        const m = missing(p);
        this.opts.onPod?.(m);
        return m;
      }),
    );
  }

  private unanswered(p: PodRef): PodResult {
    const waited = this.now() - this.plan.started;
    return failed(p, status.DEADLINE_EXCEEDED, `no answer within the overall deadline (${waited} ms)`);
  }
}
