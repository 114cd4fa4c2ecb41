// Progress of long work in the terminal: a redrawn bar with cells/s and ETA when stderr is a
// TTY, a plain line every few seconds when it is not (CI logs, `nohup`, files), and JSON lines
// through the logger with `--log-format json` (cluster log collectors).

import { log as rootLog, type Logger, type LogSink } from '@atlasvae/shared';
import { ThroughputMeter, nowSeconds } from '@atlasvae/shared/metrics';

export type ProgressMode = 'bar' | 'lines' | 'json' | 'off';

/** What Progress writes the bar to: process.stderr, or a test stand-in. */
export interface ProgressStream extends LogSink {
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** what is progressing, e.g. "training", "prepare" */
  label?: string;
  /** what the count counts: "step" (default: "step 3/10", with cells/s), or e.g. "cells", "epochs" ("300/1,000 cells") */
  unit?: string;
  /** steps of the whole run; 0 or undefined: unknown (no percentage, no ETA) */
  totalSteps?: number;
  /** steps already done (a resumed run) */
  completedSteps?: number;
  totalEpochs?: number;
  /** default: json if the logger is in json format, bar if the stream is a TTY, lines otherwise */
  mode?: ProgressMode;
  stream?: ProgressStream;
  logger?: Logger;
  /** seconds between lines (lines, json); default 5 */
  intervalSeconds?: number;
  /** seconds between redraws of the bar; default 0.1 */
  redrawSeconds?: number;
  /** monotonic seconds, injectable for tests */
  now?: () => number;
}

export interface ProgressUpdate {
  /** cells in the step(s) just completed */
  cells: number;
  /** steps done so far; default: one more than before */
  completedSteps?: number;
  epoch?: number;
  /** mean negative ELBO per cell of the last step */
  elbo?: number;
  validationElbo?: number;
}

export interface ProgressSnapshot {
  label: string;
  unit: string;
  /** units per second (steps, cells, epochs...) */
  unitsPerSecond: number;
  completedSteps: number;
  totalSteps: number | null;
  /** 0..1, null when the total is unknown */
  fraction: number | null;
  epoch: number | null;
  totalEpochs: number | null;
  cells: number;
  cellsPerSecond: number;
  /** seconds to go at the current pace; null when unknown */
  etaSeconds: number | null;
  elapsedSeconds: number;
  elbo: number | null;
  validationElbo: number | null;
}

export class Progress {
  readonly mode: ProgressMode;
  private readonly label: string;
  private readonly unit: string;
  private readonly stream: ProgressStream;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly interval: number;
  private readonly redraw: number;
  private readonly cellsMeter: ThroughputMeter;
  private readonly stepsMeter: ThroughputMeter;
  private readonly startedAt: number;
  private readonly totalSteps: number | null;
  private readonly totalEpochs: number | null;
  private completed: number;
  private epoch: number | null = null;
  private elbo: number | null = null;
  private validationElbo: number | null = null;
  private lastOutput = -Infinity;
  private started = false;
  /** cells of the first update (done before rates start) */
  private firstCells = 0;
  private barVisible = false;
  private finished = false;
  private restoreSink: LogSink | null = null;

  constructor(opts: ProgressOptions = {}) {
    this.label = opts.label ?? 'training';
    this.unit = opts.unit ?? 'step';
    this.stream = opts.stream ?? process.stderr;
    this.logger = opts.logger ?? rootLog;
    this.now = opts.now ?? nowSeconds;
    this.interval = opts.intervalSeconds ?? 5;
    this.redraw = opts.redrawSeconds ?? 0.1;
    this.mode = opts.mode ?? (this.logger.format === 'json' ? 'json' : this.stream.isTTY ? 'bar' : 'lines');
    this.totalSteps = opts.totalSteps && opts.totalSteps > 0 ? opts.totalSteps : null;
    this.totalEpochs = opts.totalEpochs && opts.totalEpochs > 0 ? opts.totalEpochs : null;
    this.completed = opts.completedSteps ?? 0;
    this.startedAt = this.now();
    // ETA and cells/s over the last 30 s: steady, yet follows a change of pace
    this.cellsMeter = new ThroughputMeter(30, this.now);
    this.stepsMeter = new ThroughputMeter(30, this.now);
    if (this.mode === 'bar') this.interceptLogs();
  }

  update(u: ProgressUpdate): void {
    if (this.finished) return;
    const t = this.now();
    const before = this.completed;
    this.completed = u.completedSteps ?? this.completed + 1;
    if (!this.started) {
      // rates count from the first update, not from construction: time spent waiting (for
      // workers, for data) before work began would otherwise read as slowness. The first
      // output says that work has started (no rate yet); the next comes one interval later.
      this.started = true;
      this.cellsMeter.start(t);
      this.stepsMeter.start(t);
      this.cellsMeter.add(0, t);
      this.firstCells = u.cells;
    } else {
      this.cellsMeter.add(u.cells, t);
      this.stepsMeter.add(Math.max(0, this.completed - before), t);
    }
    if (u.epoch !== undefined) this.epoch = u.epoch;
    if (u.elbo !== undefined && Number.isFinite(u.elbo)) this.elbo = u.elbo;
    if (u.validationElbo !== undefined && Number.isFinite(u.validationElbo))
      this.validationElbo = u.validationElbo;
    const every = this.mode === 'bar' ? this.redraw : this.interval;
    if (t - this.lastOutput >= every) this.output(t);
  }

  /** The latest held-out ELBO (shown from the next output on). */
  setValidation(elbo: number): void {
    if (Number.isFinite(elbo)) this.validationElbo = elbo;
  }

  /** Final output (written unless `summary` is false), and the terminal left on a fresh line. */
  finish(summary = true): void {
    if (this.finished) return;
    if (summary) this.output(this.now(), true);
    this.finished = true;
    if (this.mode === 'bar' && this.barVisible) this.stream.write('\n');
    this.barVisible = false;
    if (this.restoreSink) {
      this.logger.configure({ sink: this.restoreSink });
      this.restoreSink = null;
    }
  }

  snapshot(): ProgressSnapshot {
    const elapsed = this.now() - this.startedAt;
    const stepsPerSecond = this.stepsMeter.rate();
    const fraction = this.totalSteps ? Math.min(1, this.completed / this.totalSteps) : null;
    const remaining = this.totalSteps ? Math.max(0, this.totalSteps - this.completed) : null;
    let eta: number | null = null;
    if (remaining === 0) eta = 0;
    else if (remaining !== null && stepsPerSecond > 0) eta = remaining / stepsPerSecond;
    return {
      label: this.label,
      unit: this.unit,
      unitsPerSecond: stepsPerSecond,
      completedSteps: this.completed,
      totalSteps: this.totalSteps,
      fraction,
      epoch: this.epoch,
      totalEpochs: this.totalEpochs,
      cells: this.cellsMeter.totalCells + this.firstCells,
      cellsPerSecond: this.cellsMeter.rate(),
      etaSeconds: eta,
      elapsedSeconds: elapsed,
      elbo: this.elbo,
      validationElbo: this.validationElbo,
    };
  }

  private output(t: number, final = false): void {
    this.lastOutput = t;
    const s = this.snapshot();
    switch (this.mode) {
      case 'off':
        return;
      case 'bar':
        this.stream.write(`\r${renderBar(s, this.stream.columns || 100)}\x1b[K`);
        this.barVisible = true;
        return;
      case 'lines':
        this.logger.info(`${final ? `${s.label} done: ` : ''}${renderLine(s)}`);
        return;
      case 'json':
        this.logger.info(final ? 'progress done' : 'progress', {
          task: s.label,
          ...(s.unit === 'step' ? {} : { unit: s.unit, unitsPerSecond: round(s.unitsPerSecond, 1) }),
          step: s.completedSteps,
          totalSteps: s.totalSteps,
          percent: s.fraction === null ? null : round(100 * s.fraction, 2),
          epoch: s.epoch,
          totalEpochs: s.totalEpochs,
          cells: s.cells,
          cellsPerSecond: round(s.cellsPerSecond, 1),
          etaSeconds: s.etaSeconds === null ? null : round(s.etaSeconds, 1),
          elapsedSeconds: round(s.elapsedSeconds, 1),
          elbo: s.elbo,
          validationElbo: s.validationElbo,
        });
        return;
    }
  }

  /** While the bar is on screen, a log line first clears it and then the bar is drawn again below. */
  private interceptLogs(): void {
    // only when the logger writes to the same terminal as the bar
    const current = this.logger.sink;
    if (current !== this.stream) return;
    this.restoreSink = current;
    const stream = this.stream;
    this.logger.configure({
      sink: {
        write: (chunk: string) => {
          if (this.barVisible) stream.write('\r\x1b[K');
          stream.write(chunk);
          if (this.barVisible && !this.finished)
            stream.write(`\r${renderBar(this.snapshot(), stream.columns || 100)}\x1b[K`);
          return true;
        },
      },
    });
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** 75 -> "1m15s", 4000 -> "1h06m" */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h >= 100 ? `${h}h` : `${h}h${String(m).padStart(2, '0')}m`;
}

/** 12345.6 -> "12,346" */
export function formatRate(x: number): string {
  if (!Number.isFinite(x)) return '?';
  if (x >= 100) return Math.round(x).toLocaleString('en-US');
  return x.toFixed(1);
}

function stats(s: ProgressSnapshot): string[] {
  const parts: string[] = [];
  if (s.unit === 'step') {
    parts.push(
      s.totalSteps !== null ? `step ${s.completedSteps}/${s.totalSteps}` : `step ${s.completedSteps}`,
    );
  } else {
    const n = (x: number): string => x.toLocaleString('en-US');
    parts.push(
      s.totalSteps !== null
        ? `${n(s.completedSteps)}/${n(s.totalSteps)} ${s.unit}`
        : `${n(s.completedSteps)} ${s.unit}`,
    );
  }
  if (s.epoch !== null)
    parts.push(s.totalEpochs !== null ? `epoch ${s.epoch + 1}/${s.totalEpochs}` : `epoch ${s.epoch + 1}`);
  // no rate before a second update: say nothing rather than "0 cells/s"
  if (s.unit === 'step' || s.unit === 'cells' || s.cells > 0) {
    if (s.cellsPerSecond > 0) parts.push(`${formatRate(s.cellsPerSecond)} cells/s`);
  } else if (s.unitsPerSecond > 0) parts.push(`${formatRate(s.unitsPerSecond)} ${s.unit}/s`);
  parts.push(`ETA ${formatDuration(s.etaSeconds)}`);
  if (s.elbo !== null) parts.push(`elbo ${s.elbo.toFixed(1)}`);
  if (s.validationElbo !== null) parts.push(`val ${s.validationElbo.toFixed(1)}`);
  return parts;
}

/** A one-line summary, e.g. "training 42.0% step 420/1000 epoch 4/10 5,123 cells/s ETA 1m52s elbo 1234.5". */
export function renderLine(s: ProgressSnapshot): string {
  const pct = s.fraction === null ? '' : ` ${(100 * s.fraction).toFixed(1)}%`;
  return `${s.label}${pct} ${stats(s).join(' ')}`;
}

/** "training [#########.........]  42% | step 420/1000 | ... ", fitted to `columns`: the bar
 * shrinks to 10 characters, then the last fields (losses, then ETA...) are left out whole. */
export function renderBar(s: ProgressSnapshot, columns: number): string {
  const parts = stats(s);
  const pct =
    s.fraction === null
      ? ''
      : `${Math.floor(100 * s.fraction)
          .toString()
          .padStart(3)}%`;
  const max = Math.max(20, columns - 1);
  let fixed = `${s.label} [] ${pct} | ${parts.join(' | ')}`.length;
  while (fixed + 10 > max && parts.length > 1) {
    parts.pop();
    fixed = `${s.label} [] ${pct} | ${parts.join(' | ')}`.length;
  }
  const width = Math.max(10, Math.min(40, max - fixed));
  const filled = s.fraction === null ? 0 : Math.round(width * s.fraction);
  const bar = s.fraction === null ? '?'.repeat(width) : '#'.repeat(filled) + '.'.repeat(width - filled);
  const line = `${s.label} [${bar}] ${pct} | ${parts.join(' | ')}`;
  return line.length > max ? line.slice(0, max) : line;
}
