// Latent means → (seeded subsample) → UMAP → scatter PNG coloured by category, written atomically.

import { writeFileAtomic } from '@atlasvae/shared';
import { computeUmap, type UmapOptions } from './umap.js';
import { renderScatter } from './scatter-png.js';
import { subsampleIndices } from './latent-metrics.js';
import type { Rgb } from './raster.js';

export interface UmapPlotInput {
  /** [n, dim] */
  latent: Float32Array;
  dim: number;
  codes: Int32Array;
  names: string[];
  seed: number;
  /** plot a seeded subsample of at most this many cells */
  maxCells: number;
  width: number;
  height: number;
  title: string;
  /** cells the input was already subsampled from (for the title); default: the input's count */
  totalCells?: number;
  umap?: Omit<UmapOptions, 'seed'>;
}

export interface UmapPlotResult {
  nCells: number;
  nPlotted: number;
  colours: Rgb[];
  /** 2-D coordinates of the plotted cells */
  xy: Float32Array;
  /** positions (in the input) of the plotted cells */
  plotted: Uint32Array;
}

export function writeUmapPng(out: string, input: UmapPlotInput): UmapPlotResult {
  const n = input.codes.length;
  const total = input.totalCells ?? n;
  const sel = subsampleIndices(n, input.maxCells, input.seed);
  const m = sel.length;
  const pts = new Float32Array(m * input.dim);
  const codes = new Int32Array(m);
  sel.forEach((p, r) => {
    pts.set(input.latent.subarray(p * input.dim, (p + 1) * input.dim), r * input.dim);
    codes[r] = input.codes[p]!;
  });
  const xy = computeUmap(pts, m, input.dim, { ...input.umap, seed: input.seed });
  const title =
    m < total
      ? `${input.title} - ${m.toLocaleString('en-US')} of ${total.toLocaleString('en-US')} cells`
      : `${input.title} - ${m.toLocaleString('en-US')} cells`;
  const img = renderScatter({
    xy,
    codes,
    names: input.names,
    title,
    width: input.width,
    height: input.height,
    seed: input.seed,
  });
  writeFileAtomic(out, img.png);
  return { nCells: total, nPlotted: m, colours: img.colours, xy, plotted: sel };
}
