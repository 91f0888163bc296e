/** Lines a second written in full before sampling starts (per sampler). */
export const DEFAULT_LINES_PER_SECOND = 1000;

/**
 * Samples per-call log lines under load: up to `linesPerSecond` a second are written; past that, one in
 * every `1 / share` is, and each written line says how many were left out before it (`sampledOut`), so
 * counts stay true. 150,000 lines a minute at one entry is itself load.
 */
export class LogSampler {
  private windowStart = 0;
  private written = 0;
  private skipped = 0;
  private seen = 0;

  constructor(
    private readonly linesPerSecond = DEFAULT_LINES_PER_SECOND,
    /** Share of lines written past the budget. */
    private readonly share = 0.01,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Whether to write this line: `false` to leave it out, else the number left out since the last written
   * line (0 when none: the line needs no `sampledOut` field).
   */
  take(): number | false {
    const now = this.now();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.written = 0;
    }
    this.seen++;
    if (this.written < this.linesPerSecond || this.seen % Math.round(1 / this.share) === 0) {
      this.written++;
      const out = this.skipped;
      this.skipped = 0;
      return out;
    }
    this.skipped++;
    return false;
  }
}
