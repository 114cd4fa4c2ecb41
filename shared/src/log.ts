// The process-wide logger: human-readable lines on a terminal, or one JSON object per line
// (`--log-format json`) for cluster log collectors. Always written to stderr so stdout stays
// free for command output (embeddings, reports, JSON benchmark results).

export type LogFormat = 'text' | 'json';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Where log lines go: anything with a `write(string)` (process.stderr, a test buffer). */
export interface LogSink {
  write(chunk: string): unknown;
}

export interface LoggerOptions {
  format?: LogFormat;
  level?: LogLevel;
  sink?: LogSink;
  /** fields added to every line, e.g. { component: 'worker', worker: 'w1' } */
  fields?: LogFields;
  /** clock, injectable for tests */
  now?: () => Date;
}

interface LoggerState {
  format: LogFormat;
  level: LogLevel;
  sink: LogSink;
  now: () => Date;
}

export class Logger {
  /** State shared by a logger and all its children, so reconfiguring the root reaches them. */
  private readonly state: LoggerState;
  private readonly fields: LogFields;

  constructor(opts: LoggerOptions = {}, shared?: LoggerState) {
    this.state = shared ?? {
      format: opts.format ?? 'text',
      level: opts.level ?? 'info',
      sink: opts.sink ?? process.stderr,
      now: opts.now ?? (() => new Date()),
    };
    this.fields = { ...(opts.fields ?? {}) };
  }

  get format(): LogFormat {
    return this.state.format;
  }

  get level(): LogLevel {
    return this.state.level;
  }

  get sink(): LogSink {
    return this.state.sink;
  }

  /** Change format, level or sink for this logger and every child derived from it. */
  configure(opts: Pick<LoggerOptions, 'format' | 'level' | 'sink' | 'now'>): void {
    if (opts.format !== undefined) {
      if (!LOG_FORMATS.includes(opts.format))
        throw new Error(`unknown log format "${opts.format}" (use ${LOG_FORMATS.join(' or ')})`);
      this.state.format = opts.format;
    }
    if (opts.level !== undefined) {
      if (!LOG_LEVELS.includes(opts.level))
        throw new Error(`unknown log level "${opts.level}" (use ${LOG_LEVELS.join(', ')})`);
      this.state.level = opts.level;
    }
    if (opts.sink !== undefined) this.state.sink = opts.sink;
    if (opts.now !== undefined) this.state.now = opts.now;
  }

  /** A logger that adds `fields` to every line and shares this one's configuration. */
  child(fields: LogFields): Logger {
    return new Logger({ fields: { ...this.fields, ...fields } }, this.state);
  }

  enabled(level: LogLevel): boolean {
    return LEVEL_RANK[level] >= LEVEL_RANK[this.state.level];
  }

  debug(msg: string, fields?: LogFields): void {
    this.log('debug', msg, fields);
  }

  info(msg: string, fields?: LogFields): void {
    this.log('info', msg, fields);
  }

  warn(msg: string, fields?: LogFields): void {
    this.log('warn', msg, fields);
  }

  error(msg: string, fields?: LogFields): void {
    this.log('error', msg, fields);
  }

  log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (!this.enabled(level)) return;
    const all = { ...this.fields, ...(fields ?? {}) };
    const time = this.state.now();
    const line =
      this.state.format === 'json' ? jsonLine(time, level, msg, all) : textLine(time, level, msg, all);
    this.state.sink.write(line + '\n');
  }
}

function jsonLine(time: Date, level: LogLevel, msg: string, fields: LogFields): string {
  const record: LogFields = { time: time.toISOString(), level, msg };
  for (const [k, v] of Object.entries(fields)) {
    if (k === 'time' || k === 'level' || k === 'msg') record[`field_${k}`] = jsonValue(v);
    else record[k] = jsonValue(v);
  }
  return JSON.stringify(record);
}

/** Errors become their message (and stack at debug level is the caller's business); non-finite numbers become strings. */
function jsonValue(v: unknown): unknown {
  if (v instanceof Error) return v.message;
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  if (typeof v === 'bigint') return v.toString();
  return v;
}

function textLine(time: Date, level: LogLevel, msg: string, fields: LogFields): string {
  const hh = time.toISOString().slice(11, 19);
  const { component, ...rest } = fields;
  const who =
    component === undefined ? '' : `${typeof component === 'string' ? component : textValue(component)}: `;
  const kv = Object.entries(rest)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${textValue(v)}`)
    .join(' ');
  return `${hh} ${level.toUpperCase().padEnd(5)} ${who}${msg}${kv ? ' ' + kv : ''}`;
}

function textValue(v: unknown): string {
  if (v instanceof Error) return JSON.stringify(v.message);
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : formatNumber(v);
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v === null || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(Number(v.toPrecision(5)));
}

/** The process-wide root logger; the CLI configures it from `--log-format` / `--log-level`. */
export const log = new Logger();

/** A component's logger, e.g. `const logger = getLogger('coordinator')`. */
export function getLogger(component: string, fields: LogFields = {}): Logger {
  return log.child({ component, ...fields });
}

/** Apply the CLI's logging flags to the root logger (and so to every component logger). */
export function configureLogging(opts: { format?: LogFormat; level?: LogLevel }): void {
  log.configure(opts);
}
