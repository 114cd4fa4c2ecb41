// Progress for long result computations: one line on stderr, rewritten in place on a terminal,
// or a line every few seconds otherwise (logs, CI). Silent when `quiet`.

export class Progress {
  private done = 0;
  private readonly start = Date.now();
  private lastPrint = 0;
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly unit = 'cells',
    private readonly quiet = false,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  /** Add `n` finished units. */
  tick(n: number): void {
    this.set(this.done + n);
  }

  set(done: number): void {
    this.done = done;
    const now = Date.now();
    if (now - this.lastPrint >= (this.tty ? 200 : 5000)) {
      this.lastPrint = now;
      this.print(false);
    }
  }

  finish(): void {
    this.done = Math.max(this.done, this.total);
    this.print(true);
  }

  private print(final: boolean): void {
    if (this.quiet) return;
    const secs = (Date.now() - this.start) / 1000;
    const rate = secs > 0 ? this.done / secs : 0;
    const pct = this.total > 0 ? ((100 * this.done) / this.total).toFixed(1) : '100.0';
    const eta = rate > 0 && !final ? `, ~${Math.ceil((this.total - this.done) / rate)} s left` : '';
    const line = `${this.label}: ${this.done.toLocaleString('en-US')}/${this.total.toLocaleString('en-US')} ${this.unit} (${pct}%, ${Math.round(rate).toLocaleString('en-US')} ${this.unit}/s, ${secs.toFixed(1)} s${eta})`;
    if (this.tty) this.stream.write(`\r\x1b[K${line}${final ? '\n' : ''}`);
    else this.stream.write(`${line}\n`);
  }
}
