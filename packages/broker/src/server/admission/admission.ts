/**
 * Admission at one broker: **admit once, at the entry, and finish what was admitted**. An Aggregate is
 * weighed by its cost (the pods it asks) against an {@link AdaptiveLimit} that follows the broker's
 * queueing delay and the latency of what it admitted; a client past its fair share is refused at the limit
 * while one within it is admitted; a call whose deadline is shorter than the work usually takes is
 * refused on arrival. A
 * federation request (work an entry already admitted) has priority: its limit falls only at several times
 * the queueing delay that stops new Aggregates, so a busy broker sheds new work first and finishes what
 * the federation started. A refusal is RESOURCE_EXHAUSTED with a reason and a retry pushback (gRPC A6).
 */
import type { AdmissionSettings, ClientSettings } from '@wanas/topology';
import { AdaptiveLimit, UNUSED_HEADROOM } from './adaptive-limit';
import { ClientShares, type ClientEntry } from './client-shares';
import { QueueDelay } from './queue-delay';

/** The two classes of work a broker admits. */
export type WorkClass = 'aggregate' | 'federation';
/**
 * Why a call was refused. `limit`: the adaptive limit is reached. `fair-share`: the broker is busy and this
 * client is past its share. `quota`: the client's configured in-flight or rate quota. `deadline`: its time
 * left is shorter than the work takes. `hard-cap`: the fixed in-flight limit (maxInFlight*).
 */
export type RefusalReason = 'limit' | 'fair-share' | 'quota' | 'deadline' | 'hard-cap';

/** Federation requests' limit falls only at this many times the queueing delay that stops new Aggregates. */
export const FEDERATION_DELAY_FACTOR = 4;
/** Shortest and longest retry pushback sent with a refusal, ms. */
export const MIN_PUSHBACK_MS = 20;
export const MAX_PUSHBACK_MS = 2000;
/** A federation request with less time left than this cannot be answered usefully, ms (a LAN hop and a margin). */
export const MIN_FEDERATION_TIME_MS = 5;

/** A refusal: its reason, the message sent, and the pushback. */
export interface Refusal {
  reason: RefusalReason;
  message: string;
  pushbackMs: number;
}

/** Admitted work: set its real cost once planned, release it when answered. */
export interface Ticket {
  readonly client: string;
  /** Sets the cost (pods asked) once the plan is known (admitted at the broker's default cost). */
  setCost(cost: number): void;
  /** The work is answered (or gone): frees its share and measures its latency. */
  release(): void;
}

/** What admission reads of its broker. */
export interface AdmissionOptions {
  settings: () => AdmissionSettings;
  /** The fixed caps: Aggregates and federation requests in flight. */
  hardCaps: () => { aggregates: number; federation: number };
  /** An Aggregate's cost before it is planned: the pods of the federation. */
  defaultCost: () => number;
  clients: readonly ClientSettings[];
  now?: () => number;
  queueDelay?: QueueDelay;
  /** Called on every decision (metrics). */
  onDecision?: (cls: WorkClass, client: string, refused: RefusalReason | undefined) => void;
}

/** Per-class state: the limit and what is in flight. */
interface ClassState {
  limit: AdaptiveLimit;
  cost: number;
  calls: number;
}

/** A broker's admission (see the file's comment). */
export class Admission {
  readonly clients: ClientShares;
  private readonly peers: ClientShares;
  readonly queueDelay: QueueDelay;
  private readonly now: () => number;
  private readonly classes: Record<WorkClass, ClassState>;
  /** The last queueing delay read, shared by both limits' evaluations within one interval. */
  private delayReading = { at: -Infinity, ms: 0 };
  private lastRawDelayMs = Infinity;
  /** Calls refused since the start (the console's refusals per second). */
  refusals = 0;

  constructor(private readonly opts: AdmissionOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.queueDelay = opts.queueDelay ?? new QueueDelay();
    this.clients = new ClientShares(this.now);
    this.clients.configure(opts.clients);
    this.peers = new ClientShares(this.now);
    const s = opts.settings;
    const agg = (cls: WorkClass) => cls === 'aggregate';
    // The tuning is read at each evaluation (getters), so a topology reload applies it, as it does `adaptive`.
    const limit = (cls: WorkClass) =>
      new AdaptiveLimit({
        inFlight: () => this.classes[cls].cost,
        get initial() {
          return agg(cls) ? s().initialPods : opts.hardCaps().federation;
        },
        get min() {
          return agg(cls) ? s().minPods : Math.min(s().minPods, opts.hardCaps().federation);
        },
        max: () =>
          agg(cls)
            ? Math.max(s().minPods, opts.hardCaps().aggregates * opts.defaultCost())
            : opts.hardCaps().federation,
        get targetDelayMs() {
          return s().targetDelayMs * (agg(cls) ? 1 : FEDERATION_DELAY_FACTOR);
        },
        get latencyTolerance() {
          return agg(cls) ? s().latencyTolerance : Infinity;
        },
        // New Aggregates are held to what recent load has used; federation requests (admitted work) not.
        unusedHeadroom: agg(cls) ? UNUSED_HEADROOM : undefined,
        now: this.now,
        queueDelayMs: () => this.delay(),
      });
    this.classes = {
      aggregate: { limit: limit('aggregate'), cost: 0, calls: 0 },
      federation: { limit: limit('federation'), cost: 0, calls: 0 },
    };
  }

  /** Applies a reloaded topology's `clients:`. */
  configureClients(list: readonly ClientSettings[]): void {
    this.clients.configure(list);
  }

  /**
   * Admits a call or says why not. `deadline`: the caller's (epoch ms, undefined for none); `cost`: units
   * of work (an Aggregate's pods; 1 for a federation request). Never throws.
   */
  admit(cls: WorkClass, clientName: string, deadline: number | undefined, cost?: number): Ticket | Refusal {
    this.queueDelay.busy();
    const st = this.classes[cls];
    // Federation requests come from peer brokers: their own accounting, so a peer is not a client that
    // takes a share of the Aggregates' limit.
    const client = (cls === 'aggregate' ? this.clients : this.peers).entry(clientName);
    client.lastSeen = this.now();
    const units = cost ?? (cls === 'aggregate' ? this.opts.defaultCost() : 1);
    const refusal = this.check(cls, st, client, deadline, units);
    this.opts.onDecision?.(cls, client.listed ? client.name : 'other', refusal?.reason);
    if (refusal) {
      this.refusals++;
      return refusal;
    }
    return this.ticket(st, client, units);
  }

  /** The adaptive limit of a class now (pods for Aggregates, calls for federation requests). */
  limit(cls: WorkClass): number {
    return this.opts.settings().adaptive ? this.classes[cls].limit.limit : this.hardLimit(cls);
  }

  /** Work in flight in a class: cost units and calls. */
  inFlight(cls: WorkClass): { cost: number; calls: number } {
    const st = this.classes[cls];
    return { cost: st.cost, calls: st.calls };
  }

  /**
   * What an Aggregate needs now, ms: the last interval's median latency, but never more than the latency
   * the limit steers to (tolerance × unloaded), so a slow spell cannot make every deadline look too short.
   * Undefined when the last interval measured nothing: an expectation that refused every call would never
   * be measured again (a broker that started under load learnt 308 ms from its cold first interval and
   * refused every 300 ms call from then on).
   */
  expectedMs(): number | undefined {
    const l = this.classes.aggregate.limit;
    const base = l.baselineMs;
    const recent = l.last.latencyMs;
    if (base === undefined || recent === undefined) return undefined;
    return Math.min(recent, base * this.opts.settings().latencyTolerance);
  }

  /** The last queueing delay measured, ms. */
  get queueDelayMs(): number {
    return this.delayReading.ms;
  }

  /** Stops the queueing-delay timer. */
  close(): void {
    this.queueDelay.close();
  }

  private check(
    cls: WorkClass,
    st: ClassState,
    client: ClientEntry,
    deadline: number | undefined,
    units: number,
  ): Refusal | undefined {
    const caps = this.opts.hardCaps();
    const cap = cls === 'aggregate' ? caps.aggregates : caps.federation;
    if (st.calls >= cap)
      return this.refuse('hard-cap', `broker at its limit of ${cap} in-flight ${plural(cls)}`);
    if (cls === 'aggregate') {
      if (client.maxInFlight !== undefined && client.calls >= client.maxInFlight)
        return this.refuse(
          'quota',
          `client "${client.name}" at its quota of ${client.maxInFlight} in flight`,
        );
      if (!this.clients.takeToken(client))
        return this.refuse(
          'quota',
          `client "${client.name}" over its quota of ${client.ratePerSecond}/s`,
          this.clients.msToToken(client),
        );
    }
    if (!this.opts.settings().adaptive) return undefined;
    const limit = st.limit.limit; // re-evaluated first when an interval has passed
    const left = deadline === undefined ? Infinity : deadline - Date.now();
    const needed = cls === 'aggregate' ? this.expectedMs() : MIN_FEDERATION_TIME_MS;
    if (needed !== undefined && left < needed)
      return this.refuse(
        'deadline',
        `${Math.max(0, Math.round(left))} ms left; this broker answers in about ${Math.round(needed)} ms now`,
      );
    // One call is always admitted on an idle class, whatever its cost (a lone large Aggregate runs).
    if (st.calls === 0) return undefined;
    // A client within its fair share is admitted: the shares of the active clients sum to the limit, so
    // together they stay within it, and a heavy client's work left over from before a cut (the limit just
    // lowered under it) cannot refuse a light one. The heavy client, past its share, is refused at the
    // limit. Work-conserving: no room is held back for clients that do not ask (a share kept free for a
    // light client cost the heavy one a fifth of its goodput on the bench).
    if (st.cost + units <= limit) return undefined;
    if (cls === 'aggregate') {
      const share = this.clients.fairShare(client, limit);
      if (client.cost + units <= share) return undefined;
      if (share < limit)
        return this.refuse(
          'fair-share',
          `broker busy and client "${client.name}" past its fair share (${Math.round(share)} of ${limit} pods)`,
        );
    }
    return this.refuse('limit', `broker busy: ${st.cost} of ${limit} ${unit(cls)} in flight`);
  }

  private refuse(reason: RefusalReason, why: string, minPushbackMs = 0): Refusal {
    const usual = this.expectedMs() ?? this.classes.aggregate.limit.baselineMs ?? 100;
    // About the time in-flight work takes to drain, jittered so refused clients do not return in step.
    const pushbackMs = Math.round(
      Math.min(MAX_PUSHBACK_MS, Math.max(MIN_PUSHBACK_MS, minPushbackMs, usual * (0.5 + Math.random()))),
    );
    const message = `${why}; retry after ${pushbackMs} ms or on another broker`;
    return { reason, message, pushbackMs };
  }

  private ticket(st: ClassState, client: ClientEntry, units: number): Ticket {
    const started = this.now();
    let cost = units;
    let released = false;
    st.cost += cost;
    st.calls++;
    client.cost += cost;
    client.calls++;
    st.limit.noteInFlight(st.cost);
    return {
      client: client.name,
      setCost: (next: number) => {
        if (released || next === cost) return;
        st.cost += next - cost;
        client.cost += next - cost;
        cost = next;
      },
      release: () => {
        if (released) return;
        released = true;
        st.cost -= cost;
        st.calls--;
        client.cost -= cost;
        client.calls--;
        client.lastSeen = this.now();
        st.limit.sample(this.now() - started, cost);
      },
    };
  }

  private hardLimit(cls: WorkClass): number {
    const caps = this.opts.hardCaps();
    return cls === 'aggregate' ? caps.aggregates * this.opts.defaultCost() : caps.federation;
  }

  /**
   * The queueing delay, read once per interval and shared by both classes' limits: the lesser of this
   * reading and the one before, so a queue must stand for two intervals to lower a limit (on the 2-core
   * bench, a single late interval — another process scheduled, a collection — halved the limit every few
   * seconds).
   */
  private delay(): number {
    const now = this.now();
    if (now - this.delayReading.at >= 50) {
      const ms = this.queueDelay.read();
      this.delayReading = { at: now, ms: Math.min(ms, this.lastRawDelayMs) };
      this.lastRawDelayMs = ms;
    }
    return this.delayReading.ms;
  }
}

/** True when admission refused the call. */
export function isRefusal(x: Ticket | Refusal): x is Refusal {
  return (x as Refusal).reason !== undefined;
}

const plural = (cls: WorkClass) => (cls === 'aggregate' ? 'aggregates' : 'federation requests');
const unit = (cls: WorkClass) => (cls === 'aggregate' ? 'pods' : 'federation requests');
