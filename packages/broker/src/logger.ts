import winston from 'winston';

/** Log formats: `json` (one object per line, for production) or `pretty` (readable, for a terminal). */
export type LogFormat = 'json' | 'pretty';

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** winston level (default `info`, or WANAS_LOG_LEVEL). */
  level?: string;
  /** Default: `pretty` when stderr is a terminal, else `json` (or WANAS_LOG_FORMAT). */
  format?: LogFormat;
  /** Fields on every line, e.g. `{ broker: 'use-1a' }`. */
  defaultMeta?: Record<string, unknown>;
  /** Write nothing (tests). */
  silent?: boolean;
}

/** The broker's winston logger; lines go to stderr so stdout stays free for command output. */
export function createLogger(opts: LoggerOptions = {}): winston.Logger {
  const format =
    opts.format ??
    (process.env.WANAS_LOG_FORMAT as LogFormat | undefined) ??
    (process.stderr.isTTY ? 'pretty' : 'json');
  const fmt =
    format === 'pretty'
      ? winston.format.combine(
          winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
          winston.format.colorize(),
          winston.format.printf(({ timestamp, level, message, ...rest }) => {
            const extra = Object.entries(rest)
              .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
              .join(' ');
            return `${String(timestamp)} ${level} ${String(message)} ${extra}`;
          }),
        )
      : winston.format.combine(winston.format.timestamp(), winston.format.json());
  const logger = winston.createLogger({
    level: opts.level ?? process.env.WANAS_LOG_LEVEL ?? 'info',
    format: fmt,
    defaultMeta: opts.defaultMeta,
    silent: opts.silent,
    transports: [
      new winston.transports.Console({
        stderrLevels: ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'],
      }),
    ],
  });
  skipDisabledLevels(logger);
  return logger;
}

/**
 * winston builds every line and pushes it through its stream before looking at the level; per-hop `info`
 * lines in a broker logging at `warn` cost ~4% of its CPU that way. The level methods return early instead
 * (the level is read at each call, so `logger.level = 'debug'` still takes effect at once).
 */
function skipDisabledLevels(logger: winston.Logger): void {
  const methods = logger as unknown as Record<string, (...args: unknown[]) => winston.Logger>;
  for (const level of Object.keys(logger.levels)) {
    const write = methods[level];
    if (typeof write !== 'function') continue;
    methods[level] = (...args: unknown[]) =>
      logger.isLevelEnabled(level) ? write.apply(logger, args) : logger;
  }
}
