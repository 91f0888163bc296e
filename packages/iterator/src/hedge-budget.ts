/** Share of requests that may be hedged, by default (at most ~10% extra requests). */
export const DEFAULT_HEDGE_RATIO = 0.1;
/** Tokens the budget can hold: bounds a burst of hedges after a quiet spell. */
export const DEFAULT_HEDGE_MAX_TOKENS = 10;

/**
 * A token bucket shared by a broker's requests (like gRPC retry throttling or Finagle's RetryBudget):
 * each request deposits `ratio` of a token, each hedge spends one, so hedges stay near `ratio` of
 * requests however slow a peer gets — a slow peer cannot double the load.
 */
export class HedgeBudget {
  private tokens: number;
  private hedges = 0;
  private requests = 0;

  private suppressed = 0;
  private denied = 0;

  constructor(
    private readonly ratio = DEFAULT_HEDGE_RATIO,
    private readonly maxTokens = DEFAULT_HEDGE_MAX_TOKENS,
    /** Starts full (like gRPC retry throttling): a broker that just became a site's representative can hedge at once. */
    initialTokens = maxTokens,
    /**
     * True while hedging would only add load: e.g. the broker is saturated, so answers are late
     * because of its own queueing and a twin would be no faster.
     */
    private readonly overloaded: () => boolean = () => false,
  ) {
    if (!(ratio >= 0 && ratio <= 1)) throw new RangeError(`hedge ratio must be within 0..1, got ${ratio}`);
    this.tokens = Math.min(initialTokens, maxTokens);
  }

  /** Called once per request. */
  deposit(): void {
    this.requests++;
    this.tokens = Math.min(this.maxTokens, this.tokens + this.ratio);
  }

  /** Spends one token for a hedge; false when the budget is spent or hedging is suppressed (overloaded). */
  tryWithdraw(): boolean {
    if (this.tokens < 1) {
      this.denied++;
      return false;
    }
    if (this.overloaded()) {
      this.suppressed++;
      return false;
    }
    this.tokens -= 1;
    this.hedges++;
    return true;
  }

  /** True while hedging is suppressed because the broker is overloaded (its own answers are late). */
  saturated(): boolean {
    return this.overloaded();
  }

  /**
   * Counts so far: requests, hedges sent, hedges held back because the broker was overloaded
   * (`suppressed`) and because the budget had no token (`denied`: the budget is spent).
   */
  stats(): { requests: number; hedges: number; suppressed: number; denied: number } {
    return { requests: this.requests, hedges: this.hedges, suppressed: this.suppressed, denied: this.denied };
  }
}
