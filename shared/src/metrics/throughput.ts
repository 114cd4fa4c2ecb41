// Throughput over a sliding window, for the cells/s both roles report.

/** Monotonic seconds. */
export function nowSeconds(): number {
  return performance.now() / 1000;
}

/**
 * Cells per second over a sliding window of recent work. A window, not the whole run, so the
 * number follows slow-downs (a lost worker) within seconds, and not a single step, so it does not
 * jitter with every step.
 */
export class ThroughputMeter {
  /** samples[head] is the window's start; cells of samples after it are summed in windowCells */
  private samples: { t: number; cells: number }[] = [];
  private head = 0;
  private windowCells = 0;
  private total = 0;

  constructor(
    private readonly windowSeconds = 10,
    private readonly now: () => number = nowSeconds,
  ) {}

  /** Start timing: the first step's cells are counted from here. */
  start(at = this.now()): void {
    if (this.samples.length === 0) this.samples.push({ t: at, cells: 0 });
  }

  /** `cells` finished at time `at`. */
  add(cells: number, at = this.now()): void {
    if (this.samples.length === 0) this.samples.push({ t: at, cells: 0 });
    this.samples.push({ t: at, cells });
    this.windowCells += cells;
    this.total += cells;
    // keep one sample older than the window as the window's start
    while (this.samples.length - this.head > 2 && at - this.samples[this.head + 1]!.t > this.windowSeconds) {
      this.head++;
      this.windowCells -= this.samples[this.head]!.cells;
    }
    if (this.head > 1024 && this.head * 2 > this.samples.length) {
      this.samples = this.samples.slice(this.head);
      this.head = 0;
    }
  }

  /** cells finished since the first sample */
  get totalCells(): number {
    return this.total;
  }

  /** Cells per second over the window ending at the last sample; 0 before any work. */
  rate(): number {
    if (this.samples.length - this.head < 2) return 0;
    const dt = this.samples[this.samples.length - 1]!.t - this.samples[this.head]!.t;
    return dt > 0 ? this.windowCells / dt : 0;
  }
}
