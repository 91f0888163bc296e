/**
 * An open-loop load generator: Aggregates arrive on a clock (as real clients send them, whether or not
 * earlier ones were answered), from two client identities at once — a heavy one whose rate follows the
 * phases, and a light one at a steady rate beside it. Runs in a worker thread of its own
 * ({@link runOpenLoop}), so neither it nor the WAN emulator in the main thread slows the other.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AggregateRequest,
  AggregationServiceClient,
  PUSHBACK_HEADER,
  type AggregateResponse,
} from '@wanas/proto';
import { performance } from 'node:perf_hooks';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

/** One phase of the heavy client's load. */
export interface LoadPhase {
  name: string;
  /** Aggregates a second. */
  rate: number;
  seconds: number;
}

/** What the generator is asked to do. */
export interface OpenLoopJob {
  address: string;
  phases: LoadPhase[];
  deadlineMs: number;
  /** The light client's steady rate, Aggregates a second. */
  lightRate: number;
  /** Identities sent as `x-wanas-client` (insecure mode). */
  heavyClient: string;
  lightClient: string;
  operation: string;
}

/** What one client saw in one phase. */
export interface ClientPhaseResult {
  sent: number;
  /** OK with every pod answered OK, within the deadline. */
  whole: number;
  /** OK but some pod failed. */
  partial: number;
  /** Calls by status code name (OK included). */
  codes: Record<string, number>;
  /** Latency of whole answers, ms. */
  wholeMs: number[];
  /** Latency of RESOURCE_EXHAUSTED refusals, ms. */
  refusedMs: number[];
  /** Refusals that carried a `grpc-retry-pushback-ms` trailer. */
  withPushback: number;
  /** Refusals by what their message says first (`broker busy`, `… past its fair share`, `… ms left`). */
  refusedBy: Record<string, number>;
  /** Whole answers / sent among calls sent from 1 s after the phase began (recovery). */
  lateSent: number;
  lateWhole: number;
  lateWholeMs: number[];
  /** A sample of failure messages (for INTERNAL and the unexpected). */
  messages: string[];
}

/** What the generator measured: per phase, per client, and its own busy time. */
export interface OpenLoopResult {
  phases: {
    name: string;
    rate: number;
    seconds: number;
    heavy: ClientPhaseResult;
    light: ClientPhaseResult;
  }[];
  /** The generator thread's busy share of each phase (event-loop utilization). */
  generatorBusy: number[];
}

const TICK_MS = 2;

const emptyResult = (): ClientPhaseResult => ({
  sent: 0,
  whole: 0,
  partial: 0,
  codes: {},
  wholeMs: [],
  refusedMs: [],
  withPushback: 0,
  refusedBy: {},
  lateSent: 0,
  lateWhole: 0,
  lateWholeMs: [],
  messages: [],
});

/** Runs a job in a worker thread; resolves with what it measured. */
export function runOpenLoop(job: OpenLoopJob): Promise<OpenLoopResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(__filename, { workerData: job });
    w.once('message', (r: OpenLoopResult) => resolve(r));
    w.once('error', reject);
    w.once('exit', (code) => code !== 0 && reject(new Error(`load generator exited ${code}`)));
  });
}

async function generate(job: OpenLoopJob): Promise<OpenLoopResult> {
  const opts = { 'grpc.max_receive_message_length': 64 * 1024 * 1024 };
  const heavy = new AggregationServiceClient(job.address, grpc.credentials.createInsecure(), opts);
  // The light client is a client of its own: its own connection, as another service would have.
  const light = new AggregationServiceClient(job.address, grpc.credentials.createInsecure(), {
    ...opts,
    'grpc.channel_id': 'light',
  } as grpc.ChannelOptions);
  const base = AggregateRequest.fromPartial({ operation: job.operation });
  // Every call asks something of its own (nothing to share): the load is work, not identical reads.
  let seq = 0;
  const next = () => ({ ...base, params: { n: seq++ } });
  const out: OpenLoopResult = { phases: [], generatorBusy: [] };
  let pending = 0;
  for (const phase of job.phases) {
    const r = { ...phase, heavy: emptyResult(), light: emptyResult() };
    out.phases.push(r);
    const elu0 = performance.eventLoopUtilization();
    const t0 = performance.now();
    let sentHeavy = 0;
    let sentLight = 0;
    await new Promise<void>((done) => {
      const timer = setInterval(() => {
        const elapsed = performance.now() - t0;
        const stop = elapsed >= phase.seconds * 1000;
        const at = Math.min(elapsed, phase.seconds * 1000) / 1000;
        const late = elapsed >= 1000;
        while (sentHeavy < Math.floor(at * phase.rate)) {
          sentHeavy++;
          pending++;
          call(job, next(), heavy, job.heavyClient, r.heavy, late, () => pending--);
        }
        while (sentLight < Math.floor(at * job.lightRate)) {
          sentLight++;
          pending++;
          call(job, next(), light, job.lightClient, r.light, late, () => pending--);
        }
        if (stop) {
          clearInterval(timer);
          done();
        }
      }, TICK_MS);
    });
    out.generatorBusy.push(performance.eventLoopUtilization(elu0).utilization);
  }
  // Every call ends by its deadline.
  const until = performance.now() + job.deadlineMs + 2000;
  while (pending > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
  heavy.close();
  light.close();
  return out;
}

/** Sends one Aggregate and records how it ended in `res`. */
function call(
  job: OpenLoopJob,
  req: AggregateRequest,
  c: AggregationServiceClient,
  client: string,
  res: ClientPhaseResult,
  late: boolean,
  end: () => void,
): void {
  const md = new grpc.Metadata();
  md.set('x-wanas-client', client);
  const t = performance.now();
  res.sent++;
  if (late) res.lateSent++;
  let pushback = false;
  const unary = c.aggregate(
    req,
    md,
    { deadline: Date.now() + job.deadlineMs },
    (e, answer?: AggregateResponse) => {
      const ms = performance.now() - t;
      end();
      const code = e ? (grpc.status[e.code] ?? String(e.code)) : 'OK';
      res.codes[code] = (res.codes[code] ?? 0) + 1;
      if (e) {
        if (e.code === grpc.status.RESOURCE_EXHAUSTED) {
          res.refusedMs.push(ms);
          const why = refusalKind(e.details);
          res.refusedBy[why] = (res.refusedBy[why] ?? 0) + 1;
          if (pushback || e.metadata?.get(PUSHBACK_HEADER).length) res.withPushback++;
        } else if (res.messages.length < 5 && e.code !== grpc.status.DEADLINE_EXCEEDED)
          res.messages.push(`${code}: ${e.details}`);
        return;
      }
      if (answer?.summary?.podsFailed || ms > job.deadlineMs) {
        res.partial++;
        return;
      }
      res.whole++;
      res.wholeMs.push(ms);
      if (late) {
        res.lateWhole++;
        res.lateWholeMs.push(ms);
      }
    },
  );
  unary.on('status', (s) => {
    if (s.metadata.get(PUSHBACK_HEADER).length) pushback = true;
  });
}

/** A refusal's reason, from its message (admission's messages name it in their first words). */
function refusalKind(details: string): string {
  if (details.includes('fair share')) return 'fair-share';
  if (details.includes('ms left')) return 'deadline';
  if (details.includes('quota')) return 'quota';
  if (details.includes('in-flight')) return 'hard-cap';
  if (details.startsWith('broker busy')) return 'limit';
  return 'other';
}

if (!isMainThread && (workerData as { address?: string } | undefined)?.address) {
  generate(workerData as OpenLoopJob).then(
    (r) => parentPort!.postMessage(r),
    (e: unknown) => {
      throw e;
    },
  );
}
