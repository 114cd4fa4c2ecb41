// `prepare`: any supported input → a sharded Arrow dataset. Streaming passes over the source:
// (with --n-top-genes) one for the per-batch gene moments and one for the clipped moments of the
// seurat_v3 HVG selection, then the writing pass. Counts are validated as they stream by; any
// error removes the partial output.
import fs from 'node:fs';
import path from 'node:path';
import { InputError, CliError, type DatasetManifest, trainValidationSplit } from '@atlasvae/shared';
import { openSource, type MatrixSource, type ObsValues, type RowChunk } from './source.js';
import { readObsTsv, obsColumnFor, categorize, type Categorical } from './obs.js';
import { keepObsColumn, writeObsFile, type ObsColumn } from './obs-store.js';
import { readTsvRows } from './text.js';
import { GeneMoments, ClippedMoments, clipModel, selectHvg } from './hvg.js';
import { DatasetWriter, checkOutputDir, GENES_FILE } from './writer.js';

export interface PrepareOptions {
  input: string;
  out: string;
  batchKey?: string;
  labelKey?: string;
  /** metadata TSV (first column barcode) instead of the file's obs */
  obs?: string;
  layer?: string;
  useRaw?: boolean;
  nTopGenes?: number;
  /** file listing the genes to keep, in order */
  genes?: string;
  shardCells: number;
  seed: number;
  trainFraction?: number;
  allowNonInteger: boolean;
  force?: boolean;
  tmpDir?: string;
  /** entries per external-sort bucket (tests) */
  sortBucketEntries?: number;
  onProgress?: (phase: string, cellsDone: number, cellsTotal: number) => void;
  onWarning?: (msg: string) => void;
}

export interface PrepareResult {
  manifest: DatasetManifest;
  warnings: string[];
}

/** Categorical codes of an obs column (file obs or --obs TSV). */
async function obsCodes(
  src: MatrixSource,
  key: string,
  tsv: string | undefined,
  barcodes: () => Promise<string[]>,
): Promise<Categorical> {
  let v: ObsValues;
  if (tsv) v = obsColumnFor(await readObsTsv(tsv), key, await barcodes());
  else v = src.obsColumn(key);
  if (Array.isArray(v)) return categorize(v);
  return { codes: v.codes, categories: v.categories };
}

/** Genes of an imposed list, mapped to source gene indices by name, then by id. */
async function imposedGenes(
  fileOrDataset: string,
  src: MatrixSource,
): Promise<{ names: string[]; ids: string[] | null; sourceIndex: Int32Array; missing: number }> {
  // a prepared dataset folder stands for its genes.tsv
  const file =
    fs.existsSync(fileOrDataset) && fs.statSync(fileOrDataset).isDirectory()
      ? path.join(fileOrDataset, GENES_FILE)
      : fileOrDataset;
  if (!fs.existsSync(file)) throw new InputError(file, 'no such gene list');
  const rows = (await readTsvRows(file)).filter((r) => r[0] !== '');
  if (rows.length === 0) throw new InputError(file, 'empty gene list');
  const names = rows.map((r) => r[0].trim());
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) throw new InputError(file, `gene "${n}" is listed twice`);
    seen.add(n);
  }
  const byName = new Map<string, number>();
  src.genes.forEach((g, i) => {
    if (!byName.has(g)) byName.set(g, i);
  });
  const byId = new Map<string, number>();
  src.geneIds?.forEach((g, i) => {
    if (!byId.has(g)) byId.set(g, i);
  });
  const sourceIndex = new Int32Array(names.length);
  let missing = 0;
  names.forEach((n, j) => {
    const i = byName.get(n) ?? byId.get(n);
    if (i === undefined) missing++;
    sourceIndex[j] = i ?? -1;
  });
  const ids = src.geneIds ? Array.from(sourceIndex, (i, j) => (i >= 0 ? src.geneIds![i]! : names[j]!)) : null;
  return { names, ids, sourceIndex, missing };
}

/**
 * Where an entry is, numbered as the input numbers it: a MatrixMarket file counts its rows (genes)
 * and columns (cells) from 1; h5ad and 10x .h5 arrays are indexed from 0 (as in Python).
 */
function entryAt(format: MatrixSource['format'], c: RowChunk, cell: number, gene: number): string {
  if (format === 'mtx')
    return `column ${c.start + cell + 1} (barcode ${c.barcodes[cell]}), row ${gene + 1} of the MatrixMarket file`;
  return `cell ${c.start + cell} (barcode ${c.barcodes[cell]}), gene ${gene}`;
}

/** Checks every value of a chunk; returns whether all are integers. */
function checkValues(
  file: string,
  c: RowChunk,
  allowNonInteger: boolean,
  format: MatrixSource['format'],
): boolean {
  const v = c.values;
  let integer = true;
  for (let k = 0; k < v.length; k++) {
    const x = v[k]!;
    if (!(x >= 0)) {
      const cell = rowOfEntry(c.indptr, k);
      throw new InputError(
        file,
        `${Number.isNaN(x) ? 'NaN' : `negative value ${x}`} at ${entryAt(format, c, cell, c.indices[k]!)}: counts must be non-negative numbers`,
      );
    }
    if (x !== Math.round(x) || !Number.isFinite(x)) {
      if (!Number.isFinite(x))
        throw new InputError(
          file,
          `infinite value at ${entryAt(format, c, rowOfEntry(c.indptr, k), c.indices[k]!)}`,
        );
      if (!allowNonInteger) {
        const cell = rowOfEntry(c.indptr, k);
        throw new InputError(
          file,
          `non-integer value ${x} at ${entryAt(format, c, cell, c.indices[k]!)}: the model needs raw counts; use --layer (e.g. counts) or --use-raw if the file holds them elsewhere, or --allow-non-integer`,
        );
      }
      integer = false;
    }
  }
  return integer;
}

function rowOfEntry(indptr: Int32Array, k: number): number {
  let lo = 0,
    hi = indptr.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (indptr[mid]! <= k) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export async function prepareDataset(o: PrepareOptions): Promise<PrepareResult> {
  if (!Number.isInteger(o.shardCells) || o.shardCells < 1)
    throw new CliError(`--shard-cells must be a positive integer (got ${o.shardCells})`);
  if (o.nTopGenes !== undefined && (!Number.isInteger(o.nTopGenes) || o.nTopGenes < 1))
    throw new CliError(`--n-top-genes must be a positive integer (got ${o.nTopGenes})`);
  if (o.nTopGenes !== undefined && o.genes)
    throw new CliError('use either --n-top-genes or --genes, not both');
  checkOutputDir(o.out, o.force ?? false);
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    o.onWarning?.(m);
  };
  const src = await openSource(o.input, {
    layer: o.layer,
    useRaw: o.useRaw,
    tmpDir: o.tmpDir,
    sortBucketEntries: o.sortBucketEntries,
  });
  const file = src.format === 'mtx' ? path.dirname(src.file) : src.file;
  let writer: DatasetWriter | null = null;
  try {
    let barcodeCache: string[] | null = null;
    const barcodes = async (): Promise<string[]> => (barcodeCache ??= await src.allBarcodes());
    const batch = o.batchKey ? await obsCodes(src, o.batchKey, o.obs, barcodes) : null;
    const label = o.labelKey ? await obsCodes(src, o.labelKey, o.obs, barcodes) : null;
    barcodeCache = null;
    if (batch) {
      const missing = batch.codes.reduce((s, c) => s + (c < 0 ? 1 : 0), 0);
      if (missing > 0)
        throw new InputError(
          o.obs ?? file,
          `${missing} cells have no value for the batch key "${o.batchKey}"`,
        );
    }
    const nBatch = batch ? batch.categories.length : 1;
    const batchOf = (row: number): number => (batch ? batch.codes[row]! : 0);
    const labelOf = (row: number): number => (label ? label.codes[row]! : -1);
    let integerCounts = true;
    const pass = async (
      phase: string,
      onCell: (row: number, c: RowChunk, from: number, to: number) => void | Promise<void> | undefined,
    ): Promise<void> => {
      let done = 0;
      for await (const c of src.rows()) {
        if (c.start !== done)
          throw new InputError(file, `internal: cells out of order (${c.start} after ${done})`);
        integerCounts = checkValues(file, c, o.allowNonInteger, src.format) && integerCounts;
        for (let i = 0; i < c.nCells; i++) {
          const wait = onCell(c.start + i, c, c.indptr[i]!, c.indptr[i + 1]!);
          if (wait) await wait; // only when the writer flushed a record batch
        }
        done += c.nCells;
        o.onProgress?.(phase, done, src.nCells);
      }
      if (done !== src.nCells) throw new InputError(file, `read ${done} cells, expected ${src.nCells}`);
    };

    // the candidate genes: all, or only "Gene Expression" features of 10x input that has others
    // (antibody capture, CRISPR guides…), as scanpy's read_10x_* do by default
    let base: number[] = Array.from({ length: src.nGenes }, (_, g) => g);
    const types = src.featureTypes;
    if (types && types.includes('Gene Expression') && types.some((t) => t !== 'Gene Expression')) {
      base = base.filter((g) => types[g] === 'Gene Expression');
      const others = new Map<string, number>();
      types.forEach((t) => {
        if (t !== 'Gene Expression') others.set(t, (others.get(t) ?? 0) + 1);
      });
      warn(
        `kept the ${base.length} "Gene Expression" features of ${file}; left out ${[...others].map(([t, n]) => `${n} "${t}"`).join(', ')}`,
      );
    }
    const baseOf = new Int32Array(src.nGenes).fill(-1);
    base.forEach((g, j) => (baseOf[g] = j));

    // which source genes become which output genes
    let outGenes: string[] = base.map((g) => src.genes[g]!);
    let outIds: string[] | null = src.geneIds ? base.map((g) => src.geneIds![g]!) : null;
    let outOf: Int32Array = baseOf;
    let missingGenes = 0;
    let hvg: DatasetManifest['hvg'] = null;
    if (o.genes) {
      const imp = await imposedGenes(o.genes, src);
      outGenes = imp.names;
      outIds = imp.ids;
      outOf = new Int32Array(src.nGenes).fill(-1);
      imp.sourceIndex.forEach((s, j) => {
        if (s >= 0) outOf[s] = j;
      });
      missingGenes = imp.missing;
      if (imp.missing > 0)
        warn(
          `${imp.missing} of ${imp.names.length} genes in ${o.genes} are not in ${file}; their counts are zero`,
        );
      if (imp.missing === imp.names.length) throw new InputError(o.genes, `none of its genes are in ${file}`);
    } else if (o.nTopGenes !== undefined && o.nTopGenes < base.length) {
      const map = base.length === src.nGenes ? undefined : baseOf;
      const moments = new GeneMoments(nBatch, base.length);
      await pass('hvg moments', (row, c, s, e) =>
        moments.addCell(batchOf(row), c.indices, c.values, s, e, map),
      );
      const clipped = new ClippedMoments(clipModel(moments), base.length);
      await pass('hvg clipped', (row, c, s, e) =>
        clipped.addCell(batchOf(row), c.indices, c.values, s, e, map),
      );
      const sel = selectHvg(moments, clipped, o.nTopGenes).selected.map((j) => base[j]!);
      outGenes = sel.map((g) => src.genes[g]!);
      outIds = src.geneIds ? sel.map((g) => src.geneIds![g]!) : null;
      outOf = new Int32Array(src.nGenes).fill(-1);
      sel.forEach((g, j) => (outOf[g] = j));
      hvg = {
        flavor: 'seurat_v3',
        nTopGenes: o.nTopGenes,
        batchKey: o.batchKey ?? null,
        nSourceGenes: src.nGenes,
      };
    } else if (o.nTopGenes !== undefined) {
      warn(`--n-top-genes ${o.nTopGenes} is not below the ${base.length} genes of ${file}: all genes kept`);
    }

    // the write pass
    const w = new DatasetWriter(o.out, { genes: outGenes, geneIds: outIds, shardCells: o.shardCells });
    writer = w;
    let dropped = 0;
    const gi = new Int32Array(outGenes.length);
    const cv = new Float32Array(outGenes.length);
    const identity = outOf.length === outGenes.length && outOf.every((j, g) => j === g);
    // with an imposed list the output order may differ from the source order: sort each row
    const sortRows = !!o.genes;
    await pass('write', (row, c, s, e) => {
      if (identity) {
        // the common case (all genes kept, in order): a row without explicit zeros is passed on
        // as views, copied once by the writer
        let lib = 0,
          zeros = false;
        const vals = c.values;
        for (let q = s; q < e; q++) {
          const v = vals[q]!;
          if (v === 0) {
            zeros = true;
            break;
          }
          lib += v;
        }
        if (!zeros) {
          if (e === s) {
            dropped++;
            return undefined;
          }
          return w.addCell(
            c.indices.subarray(s, e),
            vals.subarray(s, e),
            lib,
            batchOf(row),
            labelOf(row),
            row,
            c.barcodes[row - c.start]!,
          );
        }
      }
      let k = 0,
        lib = 0;
      for (let q = s; q < e; q++) {
        const v = c.values[q]!;
        if (v === 0) continue;
        const j = identity ? c.indices[q]! : outOf[c.indices[q]!]!;
        if (j < 0) continue;
        gi[k] = j;
        cv[k] = v;
        lib += v;
        k++;
      }
      if (k === 0) {
        dropped++;
        return undefined;
      }
      if (sortRows) sortPairs(gi, cv, k);
      return w.addCell(
        gi.subarray(0, k),
        cv.subarray(0, k),
        lib,
        batchOf(row),
        labelOf(row),
        row,
        c.barcodes[row - c.start]!,
      );
    });
    if (w.cellsWritten === 0)
      throw new InputError(file, 'every cell has zero counts over the kept genes: nothing to write');
    if (dropped > 0) warn(`${dropped} cells with zero counts over the kept genes were dropped`);
    const nCells = w.cellsWritten;
    const trainFraction = o.trainFraction ?? 0.9;
    const split = trainValidationSplit(nCells, o.seed, trainFraction);
    // every obs column of the input (or of --obs), by source row, beside the shards
    const obsColumns = await keptObsColumns(src, o.obs, barcodes, warn);
    writeObsFile(w.tmpDir, obsColumns, src.nCells);
    const { onProgress: _p, onWarning: _w, tmpDir: _t, force: _f, sortBucketEntries: _b, ...options } = o;
    const manifest = await w.finish({
      batchKey: o.batchKey ?? null,
      batchCategories: batch ? batch.categories : ['all'],
      labelKey: o.labelKey ?? null,
      labelCategories: label ? label.categories : [],
      integerCounts,
      split: {
        method: 'trainValidationSplit',
        seed: o.seed,
        trainFraction,
        nTrain: split.train.length,
        nValidation: split.validation.length,
      },
      source: {
        path: path.resolve(o.input),
        format: src.format,
        nCells: src.nCells,
        nGenes: src.nGenes,
        options,
      },
      droppedZeroCountCells: dropped,
      missingGenes,
      hvg,
    });
    return { manifest, warnings };
  } catch (e) {
    await writer?.abort();
    throw e;
  } finally {
    await src.close();
  }
}

/** Every obs column of the source (or of the --obs TSV), as kept by keepObsColumn. */
async function keptObsColumns(
  src: MatrixSource,
  tsv: string | undefined,
  barcodes: () => Promise<string[]>,
  warn: (m: string) => void,
): Promise<ObsColumn[]> {
  const out: ObsColumn[] = [];
  if (tsv) {
    const table = await readObsTsv(tsv);
    const bc = await barcodes();
    for (const name of table.columns.keys()) {
      const c = keepObsColumn(name, obsColumnFor(table, name, bc), warn);
      if (c) out.push(c);
    }
    return out;
  }
  for (const name of src.obsKeys()) {
    let v: ObsValues;
    try {
      v = src.obsColumn(name);
    } catch (e) {
      warn(`obs column "${name}" not kept: ${(e as Error).message}`);
      continue;
    }
    if ((Array.isArray(v) ? v.length : v.codes.length) !== src.nCells) {
      warn(
        `obs column "${name}" not kept: it has a value per ${Array.isArray(v) ? v.length : v.codes.length} rows, the matrix ${src.nCells} cells`,
      );
      continue;
    }
    const c = keepObsColumn(name, v, warn);
    if (c) out.push(c);
  }
  return out;
}

/** Sorts the first n (gene, count) pairs by gene. */
function sortPairs(g: Int32Array, v: Float32Array, n: number): void {
  let sorted = true;
  for (let k = 1; k < n; k++)
    if (g[k]! < g[k - 1]!) {
      sorted = false;
      break;
    }
  if (sorted) return;
  const order = Array.from({ length: n }, (_, k) => k).sort((a, b) => g[a]! - g[b]!);
  const gs = order.map((k) => g[k]!),
    vs = order.map((k) => v[k]!);
  g.set(gs);
  v.set(vs);
}
