// Column tables written chunk by chunk (so millions of cells stream): Arrow IPC file (`.arrow`,
// `.feather`) or CSV (`.csv`, or `.tsv` with tabs). Output goes to a temporary file beside the
// target and is renamed into place by close(); abort() removes it, so nothing half-written is
// left looking complete.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import {
  RecordBatch,
  RecordBatchFileWriter,
  makeVector,
  vectorFromArray,
  Utf8,
  type Data,
} from 'apache-arrow';
import { CliError } from '@atlasvae/shared';

export type Column = Float32Array | Float64Array | Int32Array | Uint32Array | string[];

export interface TableWriter {
  readonly path: string;
  /** Append rows: every column of `columns` (same names, same order every time) has the same length. */
  write(columns: Record<string, Column>): Promise<void>;
  /** Finish the file and move it into place. */
  close(): Promise<void>;
  /** Drop the partial file. */
  abort(): void;
}

export type TableFormat = 'arrow' | 'csv' | 'tsv';

export function tableFormatOf(file: string): TableFormat | null {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.arrow' || ext === '.feather' || ext === '.ipc') return 'arrow';
  if (ext === '.csv') return 'csv';
  if (ext === '.tsv') return 'tsv';
  return null;
}

function tempBeside(file: string): string {
  const dir = path.dirname(path.resolve(file));
  fs.mkdirSync(dir, { recursive: true });
  return path.join(
    dir,
    `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`,
  );
}

function finishTemp(tmp: string, fd: number, file: string): void {
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}

export function createTableWriter(file: string): TableWriter {
  const format = tableFormatOf(file);
  if (!format) throw new CliError(`${file}: unknown table format (use .arrow, .csv or .tsv)`);
  return format === 'arrow'
    ? new ArrowTableWriter(file)
    : new DelimitedTableWriter(file, format === 'csv' ? ',' : '\t');
}

function columnLength(columns: Record<string, Column>): number {
  const [length = 0, ...others] = new Set(Object.values(columns).map((c) => c.length));
  if (others.length) throw new Error(`table columns differ in length: ${[length, ...others].join(', ')}`);
  return length;
}

class ArrowTableWriter implements TableWriter {
  private readonly tmp: string;
  private readonly fd: number;
  private readonly writer = new RecordBatchFileWriter();
  private readonly pump: Promise<void>;
  private names: string[] | null = null;
  private closed = false;

  constructor(readonly path: string) {
    this.tmp = tempBeside(path);
    this.fd = fs.openSync(this.tmp, 'w');
    // the writer is an async byte source: drain it into the file as batches are written
    const fd = this.fd;
    const writer = this.writer;
    this.pump = (async () => {
      for await (const chunk of writer as AsyncIterable<Uint8Array>) fs.writeSync(fd, chunk);
    })();
  }

  async write(columns: Record<string, Column>): Promise<void> {
    columnLength(columns);
    const names = Object.keys(columns);
    if (!this.names) this.names = names;
    else if (names.join('\0') !== this.names.join('\0'))
      throw new Error('table columns changed between chunks');
    const data: Record<string, Data> = {};
    for (const [n, c] of Object.entries(columns))
      data[n] = (Array.isArray(c) ? vectorFromArray(c, new Utf8()) : makeVector(c)).data[0]!;
    this.writer.write(new RecordBatch(data));
    // let the pump flush this batch before the caller computes the next one
    await new Promise<void>((r) => setImmediate(r));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.writer.finish();
    this.writer.close();
    await this.pump;
    finishTemp(this.tmp, this.fd, this.path);
  }

  abort(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.writer.abort();
    } catch {
      /* already failed */
    }
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
    fs.rmSync(this.tmp, { force: true });
  }
}

/** Shortest decimal that reads back as the same float32 (9 significant digits always suffice). */
export function formatFloat32(v: number): string {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'NaN' : v > 0 ? 'Inf' : '-Inf';
  for (let p = 6; p < 9; p++) {
    const s = v.toPrecision(p);
    if (Math.fround(Number(s)) === Math.fround(v)) return String(Number(s));
  }
  return String(Number(v.toPrecision(9)));
}

function quoteField(s: string, sep: string): string {
  return s.includes(sep) || s.includes('"') || s.includes('\n') || s.includes('\r')
    ? `"${s.replace(/"/g, '""')}"`
    : s;
}

class DelimitedTableWriter implements TableWriter {
  private readonly tmp: string;
  private readonly fd: number;
  private names: string[] | null = null;
  private closed = false;

  constructor(
    readonly path: string,
    private readonly sep: string,
  ) {
    this.tmp = tempBeside(path);
    this.fd = fs.openSync(this.tmp, 'w');
  }

  async write(columns: Record<string, Column>): Promise<void> {
    const n = columnLength(columns);
    const names = Object.keys(columns);
    if (!this.names) {
      this.names = names;
      fs.writeSync(this.fd, names.map((x) => quoteField(x, this.sep)).join(this.sep) + '\n');
    } else if (names.join('\0') !== this.names.join('\0'))
      throw new Error('table columns changed between chunks');
    const fmt = Object.values(columns).map((c) =>
      Array.isArray(c)
        ? (i: number) => quoteField(c[i]!, this.sep)
        : c instanceof Float32Array
          ? (i: number) => formatFloat32(c[i]!)
          : (i: number) => String(c[i]!),
    );
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(fmt.map((f) => f(i)).join(this.sep));
    if (n) fs.writeSync(this.fd, lines.join('\n') + '\n');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    finishTemp(this.tmp, this.fd, this.path);
  }

  abort(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
    fs.rmSync(this.tmp, { force: true });
  }
}
