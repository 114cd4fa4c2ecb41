// A synthetic atlas: cells of latent cell types whose genes have type-specific log-fold changes,
// per-batch gene effects, log-normal library sizes and Negative Binomial counts. Cells are
// generated one at a time from a seeded stream and handed to sinks (the prepared-dataset writer,
// optionally an .h5ad or MatrixMarket writer), so any number of cells fits in constant memory.
import { Rng, trainValidationSplit, type DatasetManifest } from '@atlasvae/shared';
import { sampleGamma, samplePoisson } from './sampling.js';
import { DatasetWriter } from './writer.js';

export interface SimulationOptions {
  cells: number;
  genes: number;
  batches: number;
  cellTypes: number;
  seed: number;
  /** median library size (total counts per cell) */
  libraryMedian: number;
  /** standard deviation of log library size */
  librarySdLog: number;
  /** fraction of genes differentially expressed per cell type */
  deFraction: number;
}

export const defaultSimulationOptions: Omit<SimulationOptions, 'cells' | 'genes'> = {
  batches: 2,
  cellTypes: 5,
  seed: 0,
  libraryMedian: 1500,
  librarySdLog: 0.4,
  deFraction: 0.15,
};

const SIM_STREAM = 0x53494d55; // "SIMU"

/** The fixed parameters of a simulated atlas (gene profiles per type and batch, dispersions). */
export interface SimulationModel {
  o: SimulationOptions;
  genes: string[];
  batchNames: string[];
  typeNames: string[];
  /** gene expression proportions per (type, batch): [type][batch] -> Float64Array(G), sums to 1 */
  profiles: Float64Array[][];
  /** inverse dispersion per gene */
  theta: Float64Array;
}

export function simulationModel(o: SimulationOptions): SimulationModel {
  const rng = new Rng(SIM_STREAM, o.seed, 0);
  const G = o.genes;
  const base = new Float64Array(G);
  for (let g = 0; g < G; g++) base[g] = 1.3 * rng.normal();
  const typeEffect = Array.from({ length: o.cellTypes }, () => {
    const e = new Float64Array(G);
    for (let g = 0; g < G; g++) if (rng.uniform() < o.deFraction) e[g] = 1.6 * rng.normal();
    return e;
  });
  const batchEffect = Array.from({ length: o.batches }, () => {
    const e = new Float64Array(G);
    for (let g = 0; g < G; g++) e[g] = 0.3 * rng.normal();
    return e;
  });
  const theta = new Float64Array(G);
  for (let g = 0; g < G; g++) theta[g] = Math.exp(Math.log(4) + 0.7 * rng.normal());
  const profiles = typeEffect.map((te) =>
    batchEffect.map((be) => {
      const p = new Float64Array(G);
      let max = -Infinity;
      for (let g = 0; g < G; g++) {
        p[g] = base[g]! + te[g]! + be[g]!;
        if (p[g]! > max) max = p[g]!;
      }
      let sum = 0;
      for (let g = 0; g < G; g++) {
        p[g] = Math.exp(p[g]! - max);
        sum += p[g]!;
      }
      for (let g = 0; g < G; g++) p[g]! /= sum;
      return p;
    }),
  );
  return { o, ...simulatedNames(o), profiles, theta };
}

/** Gene, batch and cell-type names of a simulated atlas. */
export function simulatedNames(o: Pick<SimulationOptions, 'genes' | 'batches' | 'cellTypes'>): {
  genes: string[];
  batchNames: string[];
  typeNames: string[];
} {
  const width = String(o.genes - 1).length;
  return {
    genes: Array.from({ length: o.genes }, (_, g) => `Gene${String(g).padStart(width, '0')}`),
    batchNames: Array.from({ length: o.batches }, (_, b) => `batch${b}`),
    typeNames: Array.from({ length: o.cellTypes }, (_, t) => `type${t}`),
  };
}

export interface SimulatedCell {
  /** source row (0-based) */
  index: number;
  barcode: string;
  batch: number;
  type: number;
  /** nonzero genes, ascending, and their counts (views valid until the next cell) */
  genes: Int32Array;
  counts: Float32Array;
  nnz: number;
  library: number;
}

/** Generates the cells in order; the callback may be async (backpressure from the sinks). */
export async function simulateCells(
  model: SimulationModel,
  onCell: (c: SimulatedCell) => void | Promise<void>,
): Promise<void> {
  const { o, profiles, theta } = model;
  const G = o.genes;
  const rng = new Rng(SIM_STREAM, o.seed, 1);
  const genes = new Int32Array(G);
  const counts = new Float32Array(G);
  const logMedian = Math.log(o.libraryMedian);
  // Gamma(theta)/theta multiplies the mean: its shape-dependent constants are per gene
  const width = String(o.cells - 1).length;
  for (let i = 0; i < o.cells; i++) {
    const type = rng.int(o.cellTypes);
    const batch = rng.int(o.batches);
    const L = Math.exp(logMedian + o.librarySdLog * rng.normal());
    const p = profiles[type]![batch]!;
    let nnz = 0,
      lib = 0;
    for (let g = 0; g < G; g++) {
      const mu = L * p[g]!;
      const th = theta[g]!;
      // NB(μ, θ) by inversion of its CDF from P(0) = (θ/(θ+μ))^θ, one uniform per gene; large
      // means (long searches) as a Gamma–Poisson mixture instead
      const u = (rng.nextU32() + 0.5) / 4294967296;
      let x = 0;
      // P(0) ≥ 1 − μ (as P(x > 0) ≤ E[x]): below that u the count is 0 without computing P(0)
      const q = u < 1 - mu ? 0 : mu / (th + mu);
      const p0 = q === 0 ? 1 : Math.exp(th * Math.log1p(-q));
      if (u >= p0) {
        if (mu > 30) x = samplePoisson(rng, (mu * sampleGamma(rng, th)) / th);
        else {
          let pk = p0,
            cdf = p0;
          while (u > cdf && x < 10000) {
            pk *= ((x + th) / (x + 1)) * q;
            x++;
            cdf += pk;
          }
        }
      }
      if (x > 0) {
        genes[nnz] = g;
        counts[nnz] = x;
        nnz++;
        lib += x;
      }
    }
    await onCell({
      index: i,
      barcode: `SIM${String(i).padStart(width, '0')}`,
      batch,
      type,
      genes: genes.subarray(0, nnz),
      counts: counts.subarray(0, nnz),
      nnz,
      library: lib,
    });
  }
}

export interface SimulateToDatasetOptions extends SimulationOptions {
  out: string;
  shardCells: number;
  /** seed of the train/validation split (defaults to the simulation seed) */
  splitSeed?: number;
  trainFraction?: number;
  /** extra sinks (e.g. .h5ad or MatrixMarket writers) fed every cell */
  extraSinks?: CellSink[];
  onProgress?: (done: number, total: number) => void;
}

/** Something fed every simulated cell in order, then finished (or aborted on failure). */
export interface CellSink {
  add(c: SimulatedCell): void | Promise<void>;
  finish(): Promise<void>;
  abort(): Promise<void>;
}

/** Simulates straight into the prepared-dataset format (and any extra sinks). */
export async function simulateToDataset(o: SimulateToDatasetOptions): Promise<DatasetManifest> {
  const model = simulationModel(o);
  const writer = new DatasetWriter(o.out, { genes: model.genes, geneIds: null, shardCells: o.shardCells });
  const sinks = o.extraSinks ?? [];
  let dropped = 0;
  const every = Math.max(1, Math.floor(o.cells / 100));
  try {
    await simulateCells(model, async (c) => {
      for (const s of sinks) await s.add(c);
      if (c.nnz === 0) dropped++;
      else await writer.addCell(c.genes, c.counts, c.library, c.batch, c.type, c.index, c.barcode);
      if (o.onProgress && (c.index + 1) % every === 0) o.onProgress(c.index + 1, o.cells);
    });
    for (const s of sinks) await s.finish();
    const nCells = writer.cellsWritten;
    const trainFraction = o.trainFraction ?? 0.9;
    const split = trainValidationSplit(nCells, o.splitSeed ?? o.seed, trainFraction);
    const { out: _out, extraSinks: _s, onProgress: _p, ...options } = o;
    return await writer.finish({
      batchKey: 'batch',
      batchCategories: model.batchNames,
      labelKey: 'cell_type',
      labelCategories: model.typeNames,
      integerCounts: true,
      split: {
        method: 'trainValidationSplit',
        seed: o.splitSeed ?? o.seed,
        trainFraction,
        nTrain: split.train.length,
        nValidation: split.validation.length,
      },
      source: { path: '', format: 'simulated', nCells: o.cells, nGenes: o.genes, options },
      droppedZeroCountCells: dropped,
      missingGenes: 0,
      hvg: null,
    });
  } catch (e) {
    await writer.abort();
    for (const s of sinks) await s.abort().catch(() => undefined);
    throw e;
  }
}
