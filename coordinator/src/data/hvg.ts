// Highly variable genes, seurat_v3 flavour (Stuart et al. 2019, as scanpy's
// highly_variable_genes(flavor='seurat_v3')): per batch, a loess fit (span 0.3, degree 2) of
// log10 variance on log10 mean gives each gene an expected standard deviation σ; counts are
// clipped at mean + sqrt(N)·σ and the variance of the clipped counts divided by σ² is the gene's
// normalized variance. Genes are ranked per batch, then ordered by median rank over the batches
// where they are in the top N, ties broken by the number of such batches (more first).
//
// The statistics come from two streaming passes over the cells (sums, then clipped sums), so the
// matrix is never held in memory.
import { loessFit } from './loess.js';

export const HVG_SPAN = 0.3;

/** Per-batch sums of counts and squared counts (pass 1). */
export class GeneMoments {
  readonly n: Float64Array;
  readonly sum: Float64Array[];
  readonly sumSq: Float64Array[];
  constructor(
    readonly nBatch: number,
    readonly nGenes: number,
  ) {
    this.n = new Float64Array(nBatch);
    this.sum = Array.from({ length: nBatch }, () => new Float64Array(nGenes));
    this.sumSq = Array.from({ length: nBatch }, () => new Float64Array(nGenes));
  }

  /** `map` (optional) renumbers source genes into this gene space; −1 leaves a gene out */
  addCell(
    batch: number,
    genes: ArrayLike<number>,
    values: ArrayLike<number>,
    from: number,
    to: number,
    map?: Int32Array,
  ): void {
    this.n[batch]!++;
    const s = this.sum[batch]!,
      q = this.sumSq[batch]!;
    for (let k = from; k < to; k++) {
      const v = values[k]!;
      const g = map ? map[genes[k]!]! : genes[k]!;
      if (g < 0) continue;
      s[g]! += v;
      q[g]! += v * v;
    }
  }
}

/** Per batch: gene means and the clip value mean + sqrt(N)·σ_reg (after the loess fit). */
export interface ClipModel {
  mean: Float64Array[];
  regStd: Float64Array[];
  clip: Float64Array[];
}

export function clipModel(m: GeneMoments): ClipModel {
  const mean: Float64Array[] = [],
    regStd: Float64Array[] = [],
    clip: Float64Array[] = [];
  for (let b = 0; b < m.nBatch; b++) {
    const N = m.n[b]!;
    const mu = new Float64Array(m.nGenes),
      sd = new Float64Array(m.nGenes).fill(1),
      cl = new Float64Array(m.nGenes);
    const xs: number[] = [],
      ys: number[] = [],
      idx: number[] = [];
    for (let g = 0; g < m.nGenes; g++) {
      mu[g] = N > 0 ? m.sum[b]![g]! / N : 0;
      // unbiased variance (ddof = 1), as scanpy
      const v = N > 1 ? (m.sumSq[b]![g]! - N * mu[g]! * mu[g]!) / (N - 1) : 0;
      if (v > 0) {
        xs.push(Math.log10(mu[g]!));
        ys.push(Math.log10(v));
        idx.push(g);
      }
    }
    const fit = loessFit(xs, ys, HVG_SPAN, 2);
    for (let k = 0; k < idx.length; k++) sd[idx[k]!] = Math.sqrt(Math.pow(10, fit[k]!));
    const vmax = Math.sqrt(N);
    for (let g = 0; g < m.nGenes; g++) cl[g] = sd[g]! * vmax + mu[g]!;
    mean.push(mu);
    regStd.push(sd);
    clip.push(cl);
  }
  return { mean, regStd, clip };
}

/** Per-batch sums of clipped counts and their squares (pass 2). */
export class ClippedMoments {
  readonly sum: Float64Array[];
  readonly sumSq: Float64Array[];
  constructor(
    readonly model: ClipModel,
    readonly nGenes: number,
  ) {
    this.sum = model.clip.map(() => new Float64Array(nGenes));
    this.sumSq = model.clip.map(() => new Float64Array(nGenes));
  }

  addCell(
    batch: number,
    genes: ArrayLike<number>,
    values: ArrayLike<number>,
    from: number,
    to: number,
    map?: Int32Array,
  ): void {
    const s = this.sum[batch]!,
      q = this.sumSq[batch]!,
      c = this.model.clip[batch]!;
    for (let k = from; k < to; k++) {
      const g = map ? map[genes[k]!]! : genes[k]!;
      if (g < 0) continue;
      const v = Math.min(values[k]!, c[g]!);
      s[g]! += v;
      q[g]! += v * v;
    }
  }
}

export interface HvgResult {
  /** selected genes, ascending source index */
  selected: number[];
  /** per gene: median rank over batches where in the top N (NaN elsewhere) */
  medianRank: Float64Array;
  nBatchesHighlyVariable: Int32Array;
  /** mean over batches of the normalized variance */
  variancesNorm: Float64Array;
}

/** Normalized variances per batch, ranks, and the top `nTop` genes. Batches with fewer than 2 cells are skipped. */
export function selectHvg(m: GeneMoments, clipped: ClippedMoments, nTop: number): HvgResult {
  const G = m.nGenes;
  const normVars: Float64Array[] = [];
  for (let b = 0; b < m.nBatch; b++) {
    const N = m.n[b]!;
    if (N < 2) continue;
    const mu = clipped.model.mean[b]!,
      sd = clipped.model.regStd[b]!;
    const nv = new Float64Array(G);
    for (let g = 0; g < G; g++) {
      const s = clipped.sum[b]![g]!,
        q = clipped.sumSq[b]![g]!;
      nv[g] = (N * mu[g]! * mu[g]! + q - 2 * s * mu[g]!) / ((N - 1) * sd[g]! * sd[g]!);
    }
    normVars.push(nv);
  }
  const ranks = normVars.map((nv) => {
    // rank 0 = most variable; ties by gene index
    const order = Array.from({ length: G }, (_, g) => g).sort((a, c) => nv[c]! - nv[a]! || a - c);
    const r = new Int32Array(G);
    order.forEach((g, i) => (r[g] = i));
    return r;
  });
  const medianRank = new Float64Array(G);
  const nHigh = new Int32Array(G);
  const variancesNorm = new Float64Array(G);
  for (let g = 0; g < G; g++) {
    const top: number[] = [];
    for (const r of ranks) if (r[g]! < nTop) top.push(r[g]!);
    nHigh[g] = top.length;
    top.sort((a, c) => a - c);
    const k = top.length;
    medianRank[g] = k === 0 ? NaN : k % 2 ? top[(k - 1) / 2]! : (top[k / 2 - 1]! + top[k / 2]!) / 2;
    let s = 0;
    for (const nv of normVars) s += nv[g]!;
    variancesNorm[g] = normVars.length ? s / normVars.length : 0;
  }
  const order = Array.from({ length: G }, (_, g) => g).sort((a, c) => {
    const ra = medianRank[a]!,
      rc = medianRank[c]!;
    if (Number.isNaN(ra) !== Number.isNaN(rc)) return Number.isNaN(ra) ? 1 : -1;
    if (ra !== rc && !Number.isNaN(ra)) return ra - rc;
    if (nHigh[a] !== nHigh[c]) return nHigh[c]! - nHigh[a]!;
    return a - c;
  });
  const selected = order.slice(0, Math.min(nTop, G)).sort((a, c) => a - c);
  return { selected, medianRank, nBatchesHighlyVariable: nHigh, variancesNorm };
}
