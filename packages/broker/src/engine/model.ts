/**
 * The engine's one vocabulary, shared by the planner (`plan.ts`), the executor (`executor.ts`) and the leg
 * runner (`legs.ts`): a request becomes a {@link Plan} of {@link Leg}s, each complete before anything is
 * sent — who is asked, through which brokers, with what params, for how long — and the executor only
 * sends, collects and answers. Types and tiny helpers only: this file imports nothing of the engine.
 */
import type { PageSpec } from '@wanas/operations';
import { msToDuration, type Attempt, type PageWindow, type PodResult, type TargetList } from '@wanas/proto';
import type { AttemptRecord } from '@wanas/iterator';
import type { JsonObject, Operation } from '../operations/types';

/** A pod of the federation. */
export interface PodRef {
  site: string;
  pod: string;
}

/** A pod's name as the federation writes it: `site/pod`. */
export const key = (p: PodRef): string => `${p.site}/${p.pod}`;

/**
 * How a leg reaches its pods: this broker's own pod (in-process), another pod of its site (one
 * LocalRequest), or a remote site (one SiteRequest; its representative asks the site's pods over its LAN).
 */
export type Via = 'own' | 'local' | 'site';

/** What a leg's attempts call. */
export type LegMethod = 'in-process' | 'LocalRequest' | 'SiteRequest' | 'StreamSiteRequest';

/** One leg of a plan, complete: the executor and the leg runner decide nothing about it. */
export interface Leg {
  via: Via;
  site: string;
  /** The pods it answers for, in the order they are asked. */
  pods: PodRef[];
  /** The operation's params as this leg sends them (shaped for its site or pod). */
  params: JsonObject;
  method: LegMethod;
  /** The equivalent brokers its attempts may go to (none for the own pod). */
  target: TargetList | undefined;
  /** A SiteRequest's `pods`: the pods named, in the order to ask them; empty = every pod of the site. */
  sitePods: string[];
  /** Each attempt's timeout, ms (a SiteRequest's has room for one LAN failover at the representative). */
  attemptTimeoutMs: number;
  /** Among equally good brokers, these first (a first-fit write: a representative in the pod it starts with). */
  preferBrokers: string[];
}

/** The pods of an all-at-once fan-out so far: counted as each pod's result becomes final. */
export interface Tally {
  /** Pods asked. */
  total: number;
  ok: number;
  failed: number;
  /** Pods of required sites still without a final result. */
  requiredLeft: number;
  /** The first pod of a required site that failed, if any. */
  requiredFailed: PodResult | undefined;
}

/** Why a fan-out answers before every pod has: the status given to the pods still running (cancelled). */
export interface EarlyAnswer {
  code: number;
  message: string;
}

/** When an all-at-once fan-out may answer before every pod has (see `modes/completion.ts`). */
export interface CompletionRule {
  required(pod: PodRef): boolean;
  check(tally: Tally): EarlyAnswer | undefined;
}

/**
 * How a plan's legs run. `all`: every leg at once, answering early when the `rule` (min_ok, required sites)
 * decides. `first`: one leg after another until a pod answers OK (first-fit placement).
 */
export type Schedule = { kind: 'all'; rule: CompletionRule | undefined } | { kind: 'first' };

/**
 * How an Aggregate asks its pods. `all`: every pod at once; with `minOk` > 0 it answers once that many
 * are OK, and every pod of `requiredSites` must be OK or the call fails. `first`: one pod after another
 * in preference order until one answers OK (placement).
 */
export type RequestMode =
  | { kind: 'all'; minOk: number; requiredSites: ReadonlySet<string> }
  | { kind: 'first'; preferSites: readonly string[] };

/** Everything one incoming request will do, decided before anything is sent. */
export interface Plan {
  correlationId: string;
  op: Operation;
  /** The checked params, before any leg shapes them. */
  params: JsonObject;
  headers: Record<string, string>;
  idempotencyKey: string;
  /** The client the entry serves (carried to every hop: identical requests are shared per client only). */
  client: string;
  /** Epoch ms the request arrived (pod latencies count from it). */
  started: number;
  /** Epoch ms by which the answer is needed: the executor stops waiting then. */
  deadline: number;
  /** Hops its requests travel (1 from the entry, 2 from a representative). */
  hops: number;
  /** Whether its attempts hedge. */
  hedge: boolean;
  /** A LocalRequest attempt's timeout, ms (carried in a SiteRequest for its representative's LAN). */
  attemptTimeoutMs: number;
  /** A SiteRequest it sends searches its site first-fit. */
  first: boolean;
  legs: Leg[];
  schedule: Schedule;
  /** A pageable operation's window, which its legs carry and its own pod is cut to (undefined: not paged). */
  page: PageWindow | undefined;
}

/** Where a listing stands after a page (what its page token holds). */
export interface PageCursor {
  /** Order key of the last item listed ('' at the start). */
  after: string;
  /** Its pod, as site/pod. */
  afterPod: string;
  /** Indexes (in the scope's pod list) of the pods with nothing after the cursor: not asked again. */
  done: number[];
  /**
   * Items asked of each pod, as a multiple of its even share of the page (see `paging/paging.ts`): grows
   * when a page came out short because one pod's items ran ahead of the others'.
   */
  fanout: number;
}

/** What a page token is bound to: a token made for one listing is refused for any other. */
export interface PageBinding {
  federation: string;
  operation: string;
  params: unknown;
  /** The scope as the request gave it. */
  scope: unknown;
  /** The pods it selected, as site/pod in topology order. */
  pods: string[];
}

/** How an Aggregate of a pageable operation pages (see `paging/`). */
export interface Paging {
  spec: PageSpec;
  /** Items a page holds at most (0: as many as fit in one message). */
  pageSize: number;
  /** What its token is bound to. */
  binding: PageBinding;
  /** Where the listing stands (the start, or the token's). */
  cursor: PageCursor;
  /** Bytes the page's items may use in the answer. */
  maxBytes: number;
}

/** An Aggregate's plan: every pod in scope and the request mode too. */
export interface AggregatePlan extends Plan {
  /** Every pod in scope, in topology order. */
  pods: PodRef[];
  mode: RequestMode;
  /** Remote pods come back one by one (StreamSiteRequest), so the answer may come before all of them. */
  stream: boolean;
  /** A pageable operation's listing; `pods` are then those still to ask (not exhausted). */
  paging: Paging | undefined;
}

/** A pod's result when it has none of its own: the code, the message and the attempts made. */
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
    truncated: false,
    cursor: '',
  };
}

/** An iterator's attempt record as a PodResult carries it. */
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
