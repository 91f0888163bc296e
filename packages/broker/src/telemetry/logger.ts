import TransportStream from 'winston-transport';
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
  /** Where lines go (default stderr). */
  out?: NodeJS.WritableStream;
}

/** Lines held before a write is forced within the same turn of the event loop (bytes). */
const BATCH_MAX_BYTES = 64 * 1024;
const MESSAGE = Symbol.for('message');
const LEVEL = Symbol.for('level');

/**
 * A winston transport to stderr that writes once per turn of the event loop: the lines logged in one turn
 * (a broker logs one per call it serves, several per turn under load) go out in one write instead of one
 * synchronous write each, and without winston's Console transport around it. (A CPU profile put the
 * per-line write at 14% of a broker's samples, but that counted time blocked in the write; a write costs
 * 2-10 µs of CPU here, so the gain is fewer syscalls when lines share a turn, not a large one when they do
 * not.) Flushed on exit, so a process that ends (process.exit, an uncaught error) loses no line; only a
 * SIGKILL can lose the current turn's lines.
 */
export class BatchedStderr extends TransportStream {
  private pending: string[] = [];
  private bytes = 0;
  private scheduled = false;
  private readonly flushNow = () => this.flush();

  constructor(private readonly out: NodeJS.WritableStream = process.stderr) {
    super();
    process.once('exit', this.flushNow);
  }

  override log(info: Record<string | symbol, unknown>, next: () => void): void {
    const line = `${String(info[MESSAGE])}\n`;
    this.pending.push(line);
    this.bytes += line.length;
    if (this.bytes >= BATCH_MAX_BYTES) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushNow);
    }
    next();
  }

  /** Writes every pending line now, in one write. */
  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const chunk = this.pending.join('');
    this.pending = [];
    this.bytes = 0;
    this.out.write(chunk);
  }

  override close(): void {
    this.flush();
    process.off('exit', this.flushNow);
  }
}

/**
 * winston's `json` format, through JSON.stringify (logform's uses safe-stable-stringify, which sorts out
 * cycles and BigInts at several times the cost); a line JSON.stringify refuses goes through logform's.
 */
function fastJson(): winston.Logform.Format {
  const safe = winston.format.json();
  return winston.format((info) => {
    try {
      (info as Record<string | symbol, unknown>)[MESSAGE] = JSON.stringify(info);
      return info;
    } catch {
      return safe.transform(info, safe.options);
    }
  })();
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
      : winston.format.combine(winston.format.timestamp(), fastJson());
  const logger = winston.createLogger({
    level: opts.level ?? process.env.WANAS_LOG_LEVEL ?? 'info',
    format: fmt,
    defaultMeta: opts.defaultMeta,
    silent: opts.silent,
    transports: [],
  });
  const sink = new BatchedStderr(opts.out);
  logger.add(sink);
  skipDisabledLevels(logger);
  writeDirectly(logger, sink);
  return logger;
}

/** What winston's stream write path reads of a line, and the logger internals {@link writeDirectly} uses. */
type Info = Record<string | symbol, unknown>;
type StreamLogger = winston.Logger & { write(info: Info): boolean };

/**
 * A line goes from the logger straight to its one {@link BatchedStderr}: formatted and level-checked as
 * winston's stream pipeline would (the logger's format, the transport's level or else the logger's), without
 * the object-mode Transform, pipe and Writable it passes through on the way. That pipeline was most of a
 * line's cost (a broker writes one per call it serves): ~13 → ~9 µs of CPU per line in a hot loop. The same
 * lines, fields and order come out. Once any other transport is added, or this one removed, every line takes
 * winston's own path again.
 */
function writeDirectly(logger: winston.Logger, sink: BatchedStderr): void {
  const l = logger as StreamLogger;
  const streamWrite = l.write.bind(l);
  let direct = true;
  for (const change of ['add', 'remove', 'clear'] as const) {
    const original = l[change].bind(l) as (...args: unknown[]) => winston.Logger;
    l[change] = ((...args: unknown[]) => {
      const r = original(...args);
      direct = l.transports.length === 1 && l.transports[0] === sink;
      return r;
    }) as never;
  }
  l.write = (info: Info): boolean => {
    const levels = l.levels;
    const level = info[LEVEL] ?? info.level;
    if (!direct || typeof level !== 'string' || levels[level] === undefined) return streamWrite(info);
    if (l.silent || levels[sink.level || l.level]! < levels[level]!) return true;
    if (info.exception === true && !sink.handleExceptions) return true;
    info[LEVEL] = level;
    const line = l.format.transform(info as winston.Logform.TransformableInfo, l.format.options);
    if (line) sink.log(line as Info, noop);
    return true;
  };
}

const noop = () => undefined;

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
    // `this`, not `logger`: a child logger (with its own fields) calls the same method.
    methods[level] = function (this: winston.Logger, ...args: unknown[]) {
      return this.isLevelEnabled(level) ? write.apply(this, args) : this;
    };
  }
}
