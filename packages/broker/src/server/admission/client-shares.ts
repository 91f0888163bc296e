/**
 * Per-client accounting at one broker: the work each client identity has in flight, its weight and hard
 * quotas from the topology's `clients:`, and its fair share of a limit among the clients active now.
 */
import type { ClientSettings } from '@wanas/topology';

/** A client with nothing in flight is forgotten after this long without a call, ms. */
export const CLIENT_IDLE_MS = 10_000;
/** Client identities tracked at once, at most; beyond it, unknown ones share one entry ({@link OTHER_CLIENT}). */
export const MAX_TRACKED_CLIENTS = 4096;
/** The entry unlisted identities share once {@link MAX_TRACKED_CLIENTS} are tracked (and their metric label). */
export const OTHER_CLIENT = 'other';

/** One client's accounting. */
export interface ClientEntry {
  name: string;
  /** Configured in `clients:` (its name is a metric label; other names are counted as {@link OTHER_CLIENT}). */
  listed: boolean;
  weight: number;
  maxInFlight: number | undefined;
  ratePerSecond: number | undefined;
  /** Units of work (pods) in flight. */
  cost: number;
  /** Calls in flight. */
  calls: number;
  /** Rate tokens left (a bucket of one second's worth). */
  tokens: number;
  tokensAt: number;
  lastSeen: number;
}

/** Client identities at one broker (see the file's comment). */
export class ClientShares {
  private readonly clients = new Map<string, ClientEntry>();
  private configured = new Map<string, ClientSettings>();
  private activeWeight = 0;
  private activeWeightAt = -Infinity;

  constructor(private readonly now: () => number) {}

  /** Applies the topology's `clients:` (on start and on every reload). */
  configure(list: readonly ClientSettings[]): void {
    this.configured = new Map(list.map((c) => [c.name, c]));
    for (const e of this.clients.values()) Object.assign(e, this.settingsOf(e.name));
  }

  /** The entry of an identity, made on first sight. */
  entry(name: string): ClientEntry {
    let e = this.clients.get(name);
    if (e) return e;
    if (this.clients.size >= MAX_TRACKED_CLIENTS) this.evictIdle();
    if (this.clients.size >= MAX_TRACKED_CLIENTS && !this.configured.has(name))
      return this.entry(OTHER_CLIENT);
    const now = this.now();
    e = {
      name,
      cost: 0,
      calls: 0,
      tokensAt: now,
      lastSeen: now,
      tokens: 0,
      ...this.settingsOf(name),
    };
    e.tokens = e.ratePerSecond ?? 0;
    this.clients.set(name, e);
    return e;
  }

  /**
   * The client's fair share of `limit`: its weight over the weights of the clients active now (in flight,
   * or seen within the last second), at least one unit.
   */
  fairShare(e: ClientEntry, limit: number): number {
    this.refresh();
    return Math.max(1, (limit * e.weight) / Math.max(e.weight, this.activeWeight));
  }

  /** The weight of the active clients, recomputed at most every 100 ms. */
  private refresh(): void {
    const now = this.now();
    if (now - this.activeWeightAt < 100) return;
    this.activeWeightAt = now;
    const active = [...this.clients.values()].filter((c) => c.calls > 0 || now - c.lastSeen < 1000);
    this.activeWeight = active.reduce((n, c) => n + c.weight, 0);
  }

  /** Takes one rate token; false when the client's `ratePerSecond` is spent (true without one). */
  takeToken(e: ClientEntry): boolean {
    if (e.ratePerSecond === undefined) return true;
    const now = this.now();
    e.tokens = Math.min(e.ratePerSecond, e.tokens + ((now - e.tokensAt) / 1000) * e.ratePerSecond);
    e.tokensAt = now;
    if (e.tokens < 1) return false;
    e.tokens -= 1;
    return true;
  }

  /** Ms until the client's next rate token. */
  msToToken(e: ClientEntry): number {
    return e.ratePerSecond ? Math.ceil(((1 - e.tokens) / e.ratePerSecond) * 1000) : 0;
  }

  /** Clients tracked now. */
  get size(): number {
    return this.clients.size;
  }

  private settingsOf(name: string) {
    const c = this.configured.get(name);
    return {
      listed: c !== undefined,
      weight: c?.weight ?? 1,
      maxInFlight: c?.maxInFlight,
      ratePerSecond: c?.ratePerSecond,
    };
  }

  private evictIdle(): void {
    const now = this.now();
    for (const [k, e] of this.clients)
      if (e.calls === 0 && now - e.lastSeen > CLIENT_IDLE_MS && k !== OTHER_CLIENT) this.clients.delete(k);
  }
}
