// Writes simulated cells as a 10x MatrixMarket folder (genes × cells, entries in cell order),
// plus labels.tsv. The entry count is only known at the end, so the size line is written
// space-padded and patched in place.
import fs from 'node:fs';
import path from 'node:path';
import type { CellSink, SimulatedCell } from './simulate.js';

const SIZE_LINE_WIDTH = 48;

export class MtxCellSink implements CellSink {
  private readonly tmp: string;
  private fd: number;
  private labels: number;
  private barcodes: number;
  private chunks: string[] = [];
  private pending = 0;
  private nnz = 0;
  private cells = 0;

  constructor(
    private readonly dir: string,
    private readonly genes: string[],
    private readonly nCellsPlanned: number,
    private readonly batchNames: string[],
    private readonly typeNames: string[],
  ) {
    fs.mkdirSync(path.dirname(path.resolve(dir)), { recursive: true });
    this.tmp = `${dir}.partial-${process.pid}`;
    fs.rmSync(this.tmp, { recursive: true, force: true });
    fs.mkdirSync(this.tmp);
    fs.writeFileSync(
      path.join(this.tmp, 'features.tsv'),
      genes.map((g) => `${g}\t${g}\tGene Expression\n`).join(''),
    );
    this.fd = fs.openSync(path.join(this.tmp, 'matrix.mtx'), 'w');
    fs.writeSync(
      this.fd,
      `%%MatrixMarket matrix coordinate integer general\n%metadata_json: {"software": "atlasvae simulate"}\n${' '.repeat(SIZE_LINE_WIDTH)}\n`,
    );
    this.barcodes = fs.openSync(path.join(this.tmp, 'barcodes.tsv'), 'w');
    this.labels = fs.openSync(path.join(this.tmp, 'labels.tsv'), 'w');
    fs.writeSync(this.labels, 'barcode\tcell_type\tbatch\n');
  }

  add(c: SimulatedCell): void {
    const col = c.index + 1;
    let s = '';
    for (let k = 0; k < c.nnz; k++) s += `${c.genes[k]! + 1} ${col} ${c.counts[k]}\n`;
    this.chunks.push(s);
    this.pending += s.length;
    this.nnz += c.nnz;
    this.cells++;
    fs.writeSync(this.barcodes, c.barcode + '\n');
    fs.writeSync(this.labels, `${c.barcode}\t${this.typeNames[c.type]}\t${this.batchNames[c.batch]}\n`);
    if (this.pending > 1 << 22) this.flush();
  }

  private flush(): void {
    if (this.chunks.length) fs.writeSync(this.fd, this.chunks.join(''));
    this.chunks = [];
    this.pending = 0;
  }

  async finish(): Promise<void> {
    this.flush();
    const size = `${this.genes.length} ${this.cells} ${this.nnz}`;
    const header =
      '%%MatrixMarket matrix coordinate integer general\n%metadata_json: {"software": "atlasvae simulate"}\n';
    fs.writeSync(this.fd, size.padEnd(SIZE_LINE_WIDTH, ' '), Buffer.byteLength(header));
    fs.closeSync(this.fd);
    fs.closeSync(this.barcodes);
    fs.closeSync(this.labels);
    if (this.cells !== this.nCellsPlanned)
      throw new Error(`wrote ${this.cells} cells, expected ${this.nCellsPlanned}`);
    fs.rmSync(this.dir, { recursive: true, force: true });
    fs.renameSync(this.tmp, this.dir);
  }

  async abort(): Promise<void> {
    for (const fd of [this.fd, this.barcodes, this.labels])
      try {
        fs.closeSync(fd);
      } catch {
        /* closed */
      }
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}
