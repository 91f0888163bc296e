/**
 * The console's memory of the Aggregates this broker served as entry: a bounded ring (the oldest entry
 * makes room for the newest), each with its code summary, latency and tree (every pod, every attempt). A
 * user's sessions are personal data: params and results are kept only when the setting says so.
 */
import { status } from '@grpc/grpc-js';
import { codeName, durationToMs, type AggregateRequest, type AggregateResponse } from '@wanas/proto';

/** One attempt at a pod, as the console shows it. */
export interface JournalAttempt {
  brokerId: string;
  code: string;
  message: string;
  latencyMs: number;
  hedged: boolean;
}

/** One pod of an Aggregate's tree. */
export interface JournalPod {
  site: string;
  pod: string;
  code: string;
  message: string;
  answeredBy: string;
  latencyMs: number;
  attempts: JournalAttempt[];
  /** The pod's result, when bodies are kept. */
  result?: unknown;
}

/** One Aggregate served as entry. */
export interface JournalEntry {
  /** Position in the journal (grows by one per entry; the live tail asks for those after one). */
  seq: number;
  /** Epoch ms it was answered. */
  at: number;
  correlationId: string;
  operation: string;
  client: string;
  /** The call's status: OK, or why the whole call failed. */
  code: string;
  message: string;
  latencyMs: number;
  podsAsked: number;
  podsOk: number;
  podsFailed: number;
  failedByCode: Record<string, number>;
  /** Answered from the cache, or shared with another caller's execution. */
  sharedFrom: string;
  cached: boolean;
  pods: JournalPod[];
  /** The request's params and reduced result, when bodies are kept. */
  params?: unknown;
  reduced?: unknown;
}

/** The ring of recent Aggregates (see the file's comment). */
export class RequestJournal {
  private readonly ring: JournalEntry[] = [];
  private seq = 0;
  /**
   * Trees already made, by the answer's pods (without bodies): callers that shared an execution or a
   * cached answer share its pods too, so the tree is made once for all of them.
   */
  private readonly trees = new WeakMap<AggregateResponse['pods'], JournalPod[]>();

  constructor(private readonly settings: () => { requests: number; keepBodies: boolean }) {}

  /** Records an answered Aggregate, or one that failed as a whole (`error`: its status code and message). */
  record(
    req: AggregateRequest,
    client: string,
    latencyMs: number,
    outcome: { res: AggregateResponse } | { code: number; message: string },
  ): void {
    const { requests, keepBodies } = this.settings();
    if (requests === 0) return;
    const res = 'res' in outcome ? outcome.res : undefined;
    const summary = res?.summary;
    const entry: JournalEntry = {
      seq: ++this.seq,
      at: Date.now(),
      correlationId: req.correlationId,
      operation: req.operation,
      client,
      code: codeName('code' in outcome ? outcome.code : status.OK),
      message: 'message' in outcome ? outcome.message : '',
      latencyMs,
      podsAsked: summary?.podsAsked ?? 0,
      podsOk: summary?.podsOk ?? 0,
      podsFailed: summary?.podsFailed ?? 0,
      failedByCode: summary?.failedByCode ?? {},
      sharedFrom: res?.sharedFrom ?? '',
      cached: res?.cached ?? false,
      pods: this.tree(res?.pods ?? [], keepBodies),
      ...(keepBodies ? { params: req.params, reduced: res?.reduced } : {}),
    };
    this.ring.push(entry);
    while (this.ring.length > requests) this.ring.shift();
  }

  /** The pods of an answer as the console shows them (shared between answers with the same pods). */
  private tree(pods: AggregateResponse['pods'], keepBodies: boolean): JournalPod[] {
    const made = keepBodies ? undefined : this.trees.get(pods);
    if (made) return made;
    const tree = pods.map((p) => ({
      site: p.site,
      pod: p.pod,
      code: codeName(p.code),
      message: p.message,
      answeredBy: p.answeredBy,
      latencyMs: durationToMs(p.latency) ?? 0,
      attempts: p.attempts.map((a) => ({
        brokerId: a.brokerId,
        code: codeName(a.code),
        message: a.message,
        latencyMs: durationToMs(a.latency) ?? 0,
        hedged: a.hedged,
      })),
      ...(keepBodies && p.result ? { result: p.result } : {}),
    }));
    if (!keepBodies) this.trees.set(pods, tree);
    return tree;
  }

  /** Entries after `seq`, newest last; only those with a failure (a failed pod or call) when `failedOnly`. */
  since(seq: number, failedOnly = false): JournalEntry[] {
    return this.ring.filter((e) => e.seq > seq && (!failedOnly || failed(e)));
  }

  /** The entry of a correlation id (the newest, if it was asked again). */
  find(correlationId: string): JournalEntry | undefined {
    for (let i = this.ring.length - 1; i >= 0; i--)
      if (this.ring[i]!.correlationId === correlationId) return this.ring[i];
    return undefined;
  }
}

/** Whether an entry failed, in whole or for some pod. */
export function failed(e: Pick<JournalEntry, 'code' | 'podsFailed'>): boolean {
  return e.code !== 'OK' || e.podsFailed > 0;
}
