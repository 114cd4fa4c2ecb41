// Writes a prepared dataset: cells appended one at a time (in global order) are grouped into
// record batches of RECORD_BATCH_CELLS cells and shard files of at most `shardCells` cells, each an
// Arrow IPC file hashed while it is written. Everything goes into a temporary folder beside the
// destination that is renamed into place only once the manifest is written.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { RecordBatchFileWriter } from 'apache-arrow';
import { cellBatchToRecordBatch } from '@atlasvae/shared/arrow';
import {
  type CellBatch,
  CliError,
  DATASET_FORMAT,
  DATASET_FORMAT_VERSION,
  MANIFEST_FILE,
  RECORD_BATCH_CELLS,
  type DatasetManifest,
  type ShardInfo,
} from '@atlasvae/shared';

/** gene names (and ids) of a dataset, one per line */
export const GENES_FILE = 'genes.tsv';

/** Grows typed arrays as cells are appended: the record batch being filled. */
class RowBuffer {
  n = 0;
  nnz = 0;
  indptr = new Int32Array(RECORD_BATCH_CELLS + 1);
  indices = new Int32Array(1 << 16);
  counts = new Float32Array(1 << 16);
  library = new Float32Array(RECORD_BATCH_CELLS);
  batch = new Int32Array(RECORD_BATCH_CELLS);
  label = new Int32Array(RECORD_BATCH_CELLS);
  cellIndex = new Uint32Array(RECORD_BATCH_CELLS);
  sourceRow = new Uint32Array(RECORD_BATCH_CELLS);
  barcodes: string[] = [];

  reserve(extra: number): void {
    if (this.nnz + extra <= this.indices.length) return;
    let cap = this.indices.length;
    while (cap < this.nnz + extra) cap *= 2;
    const i = new Int32Array(cap);
    i.set(this.indices.subarray(0, this.nnz));
    this.indices = i;
    const c = new Float32Array(cap);
    c.set(this.counts.subarray(0, this.nnz));
    this.counts = c;
  }

  /** a batch viewing the buffer (valid until the next append) */
  view(nGenes: number): CellBatch {
    const n = this.n;
    return {
      nCells: n,
      nGenes,
      indptr: this.indptr.subarray(0, n + 1),
      indices: this.indices.subarray(0, this.nnz),
      counts: this.counts.subarray(0, this.nnz),
      library: this.library.subarray(0, n),
      batch: this.batch.subarray(0, n),
      label: this.label.subarray(0, n),
      cellIndex: this.cellIndex.subarray(0, n),
    };
  }

  clear(): void {
    this.n = 0;
    this.nnz = 0;
    this.barcodes = [];
  }
}

interface OpenShard {
  info: ShardInfo;
  fd: number;
  hash: crypto.Hash;
  writer: RecordBatchFileWriter;
  pump: Promise<void>;
}

export interface DatasetWriterOptions {
  genes: string[];
  geneIds: string[] | null;
  shardCells: number;
}

/** Manifest fields the writer does not know itself. */
export type ManifestRest = Omit<
  DatasetManifest,
  | 'format'
  | 'formatVersion'
  | 'createdAt'
  | 'nCells'
  | 'nGenes'
  | 'nnz'
  | 'recordBatchCells'
  | 'genes'
  | 'geneIds'
  | 'shards'
>;

export class DatasetWriter {
  readonly tmpDir: string;
  private readonly buf = new RowBuffer();
  private shard: OpenShard | null = null;
  private readonly shards: ShardInfo[] = [];
  private nextCell = 0;
  private nnz = 0;
  private done = false;

  constructor(
    readonly outDir: string,
    private readonly o: DatasetWriterOptions,
  ) {
    if (!(o.shardCells >= 1)) throw new CliError(`--shard-cells must be at least 1 (got ${o.shardCells})`);
    const parent = path.dirname(path.resolve(outDir));
    fs.mkdirSync(parent, { recursive: true });
    this.tmpDir = fs.mkdtempSync(path.join(parent, `.${path.basename(outDir)}.partial-`));
  }

  get cellsWritten(): number {
    return this.nextCell;
  }

  /**
   * Appends one cell; genes ascending, counts nonzero. Its global index is the number of cells
   * appended before it. Returns a promise (to await) only when a record batch was written out.
   */
  addCell(
    genes: ArrayLike<number>,
    counts: ArrayLike<number>,
    library: number,
    batch: number,
    label: number,
    sourceRow: number,
    barcode: string,
  ): Promise<void> | undefined {
    const b = this.buf;
    const k = genes.length;
    b.reserve(k);
    if (genes instanceof Int32Array) b.indices.set(genes, b.nnz);
    else for (let j = 0; j < k; j++) b.indices[b.nnz + j] = genes[j]!;
    if (counts instanceof Float32Array) b.counts.set(counts, b.nnz);
    else for (let j = 0; j < k; j++) b.counts[b.nnz + j] = counts[j]!;
    b.nnz += k;
    const i = b.n;
    b.indptr[i + 1] = b.nnz;
    b.library[i] = library;
    b.batch[i] = batch;
    b.label[i] = label;
    b.cellIndex[i] = this.nextCell++;
    b.sourceRow[i] = sourceRow;
    b.barcodes.push(barcode);
    b.n++;
    this.nnz += k;
    const inShard = this.shard ? this.shard.info.cells : 0;
    if (b.n === RECORD_BATCH_CELLS || inShard + b.n >= this.o.shardCells) return this.flushRecordBatch();
    return undefined;
  }

  private openShard(): OpenShard {
    const file = `shard-${String(this.shards.length).padStart(5, '0')}.arrow`;
    const fd = fs.openSync(path.join(this.tmpDir, file), 'w');
    const hash = crypto.createHash('sha256');
    const writer = new RecordBatchFileWriter();
    const info: ShardInfo = {
      file,
      firstCell: this.nextCell - this.buf.n,
      cells: 0,
      nnz: 0,
      recordBatches: 0,
      bytes: 0,
      sha256: '',
    };
    // The writer queues its output bytes; this loop moves them to disk as they come.
    const pump = (async () => {
      // (Arrow types the queue's items loosely; they are the file's bytes)
      for await (const chunk of writer as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        let off = 0;
        while (off < chunk.byteLength) off += fs.writeSync(fd, chunk, off);
        info.bytes += chunk.byteLength;
      }
    })();
    return { info, fd, hash, writer, pump };
  }

  private async flushRecordBatch(): Promise<void> {
    const b = this.buf;
    if (b.n === 0) return;
    if (!this.shard) this.shard = this.openShard();
    const s = this.shard;
    s.writer.write(
      cellBatchToRecordBatch(b.view(this.o.genes.length), {
        sourceRow: b.sourceRow.subarray(0, b.n),
        barcodes: b.barcodes,
      }),
    );
    s.info.cells += b.n;
    s.info.nnz += b.nnz;
    s.info.recordBatches++;
    b.clear();
    // queued bytes are drained by the pump in microtasks, all done before the next macrotask
    await new Promise<void>((r) => setImmediate(r));
    if (s.info.cells >= this.o.shardCells) await this.closeShard();
  }

  private async closeShard(): Promise<void> {
    const s = this.shard;
    if (!s) return;
    this.shard = null;
    s.writer.finish();
    s.writer.close();
    await s.pump;
    fs.fsyncSync(s.fd);
    fs.closeSync(s.fd);
    s.info.sha256 = s.hash.digest('hex');
    this.shards.push(s.info);
  }

  /** Writes the manifest and moves the folder into place (replacing an earlier dataset there). */
  async finish(rest: ManifestRest): Promise<DatasetManifest> {
    await this.flushRecordBatch();
    await this.closeShard();
    const manifest: DatasetManifest = {
      format: DATASET_FORMAT,
      formatVersion: DATASET_FORMAT_VERSION,
      createdAt: new Date().toISOString(),
      nCells: this.nextCell,
      nGenes: this.o.genes.length,
      nnz: this.nnz,
      recordBatchCells: RECORD_BATCH_CELLS,
      genes: this.o.genes,
      geneIds: this.o.geneIds,
      shards: this.shards,
      ...rest,
    };
    fs.writeFileSync(path.join(this.tmpDir, MANIFEST_FILE), JSON.stringify(manifest, null, 1));
    // the gene list on its own, usable as `prepare --genes` for query data
    const ids = this.o.geneIds;
    fs.writeFileSync(
      path.join(this.tmpDir, GENES_FILE),
      this.o.genes.map((g, i) => (ids ? `${g}\t${ids[i]}\n` : `${g}\n`)).join(''),
    );
    fs.chmodSync(this.tmpDir, 0o755); // mkdtemp makes it private
    let old: string | null = null;
    if (fs.existsSync(this.outDir)) {
      old = `${this.tmpDir}.old`;
      fs.renameSync(this.outDir, old);
    }
    fs.renameSync(this.tmpDir, this.outDir);
    if (old) fs.rmSync(old, { recursive: true, force: true });
    this.done = true;
    return manifest;
  }

  /** Removes everything written so far. */
  async abort(): Promise<void> {
    if (this.done) return;
    if (this.shard) {
      const s = this.shard;
      this.shard = null;
      try {
        s.writer.abort();
      } catch {
        /* already closed */
      }
      await s.pump.catch(() => undefined);
      try {
        fs.closeSync(s.fd);
      } catch {
        /* closed */
      }
    }
    fs.rmSync(this.tmpDir, { recursive: true, force: true });
    this.done = true;
  }
}

/** Refuses an output folder that exists and is not a dataset (so prepare never clobbers other data). */
export function checkOutputDir(outDir: string, force: boolean): void {
  if (!fs.existsSync(outDir)) return;
  if (!fs.statSync(outDir).isDirectory()) throw new CliError(`${outDir}: exists and is not a folder`);
  const entries = fs.readdirSync(outDir);
  if (entries.length === 0) return;
  if (!entries.includes(MANIFEST_FILE))
    throw new CliError(`${outDir}: exists and is not a prepared dataset; choose another --out`);
  if (!force) throw new CliError(`${outDir}: a dataset already exists there; pass --force to replace it`);
}
