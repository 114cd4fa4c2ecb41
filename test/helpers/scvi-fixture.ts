// The tiny scVI models in ../shared/fixtures/scvi_reference.json (nb, zinb, poisson: parameters, inputs,
// noise, and PyTorch's loss, per-cell terms and gradients) and the checks both the JS model's and the
// device model's tests run against them. Absent fixture: `skipFixture` says so and `fixture` is empty.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { CellBatch } from '@atlasvae/shared';
import { entry, type CellTerms, type ParamLayout } from '@atlasvae/shared/model';
import { sharedPath, skipUnlessShared } from './paths.js';

export interface FixtureCase {
  dims: { genes: number; hidden: number; latent: number; cells: number; n_batch: number };
  kl_weight: number;
  x: number[][];
  batch: number[];
  eps: number[][];
  params: Record<string, unknown>;
  grads: Record<string, unknown>;
  reconstruction: number[];
  kl: number[];
  loss: number;
}

/** `skip` value for node:test when the fixture is absent. */
export const skipFixture = skipUnlessShared('fixtures', 'scvi_reference.json');
/** The cases by likelihood name; empty when the fixture is absent. */
export const fixture: Record<string, FixtureCase> = skipFixture
  ? {}
  : JSON.parse(fs.readFileSync(sharedPath('fixtures', 'scvi_reference.json')!, 'utf8'));

/** A nested array of numbers as one flat list, row-major (PyTorch's layout). */
export function flatten(v: unknown): number[] {
  return Array.isArray(v) ? v.flatMap(flatten) : [v as number];
}

/** Dense counts (cells × genes) as a sparse CellBatch with library sizes; no labels. */
export function denseToBatch(x: number[][], batch: number[]): CellBatch {
  const n = x.length;
  const indptr = new Int32Array(n + 1);
  const idx: number[] = [];
  const vals: number[] = [];
  const library = new Float32Array(n);
  x.forEach((row, i) => {
    row.forEach((v, j) => {
      if (v !== 0) {
        idx.push(j);
        vals.push(v);
        library[i]! += v;
      }
    });
    indptr[i + 1] = idx.length;
  });
  return {
    nCells: n,
    nGenes: x[0]!.length,
    indptr,
    indices: Int32Array.from(idx),
    counts: Float32Array.from(vals),
    library,
    batch: Int32Array.from(batch),
    label: new Int32Array(n).fill(-1),
    cellIndex: Uint32Array.from({ length: n }, (_, i) => i),
  };
}

/** `actual` within 1e-6 + 1e-4 relative of the fixture's `expected`. */
export function closeToFixture(actual: number, expected: number, what: string): void {
  const tol = 1e-6 + 1e-4 * Math.abs(expected);
  assert.ok(
    Math.abs(actual - expected) <= tol,
    `${what}: got ${actual}, PyTorch ${expected} (|diff| ${Math.abs(actual - expected).toExponential(2)} > ${tol.toExponential(2)})`,
  );
}

/** The mean loss and summed reconstruction and KL of the case's cells. */
export function checkFixtureLoss(
  name: string,
  c: FixtureCase,
  t: { lossSum: number; reconstructionSum: number; klSum: number },
): void {
  const n = c.dims.cells;
  closeToFixture(t.lossSum / n, c.loss, `${name} loss`);
  closeToFixture(
    t.reconstructionSum,
    c.reconstruction.reduce((a, b) => a + b, 0),
    `${name} Σ reconstruction`,
  );
  closeToFixture(
    t.klSum,
    c.kl.reduce((a, b) => a + b, 0),
    `${name} Σ kl`,
  );
}

/** Every gradient of the mean loss (`grad` is of the summed loss), and that the fixture covers every parameter. */
export function checkFixtureGradients(
  name: string,
  c: FixtureCase,
  layout: ParamLayout,
  grad: Float32Array,
): void {
  const n = c.dims.cells;
  let checked = 0;
  for (const [pname, gv] of Object.entries(c.grads)) {
    const e = entry(layout, pname);
    const expected = flatten(gv);
    for (let i = 0; i < e.size; i++)
      closeToFixture(grad[e.offset + i]! / n, expected[i]!, `${name} d loss/d ${pname}[${i}]`);
    checked += e.size;
  }
  assert.equal(checked, layout.size, 'every parameter has a gradient checked');
}

/**
 * BatchNorm running statistics equal to one batch's biased statistics (`stats` holds the unbiased
 * variance, as a gradient returns it), for two hidden layers of `hidden` units: evaluation with
 * these reproduces the training-mode BatchNorm the fixture used.
 */
export function batchStatisticsAsBuffers(
  stats: Float32Array,
  hidden: number,
  n: number,
  size: number,
): Float32Array {
  const buffers = new Float32Array(size);
  for (let layer = 0; layer < 2; layer++) {
    const o = layer * 2 * hidden;
    for (let j = 0; j < hidden; j++) {
      buffers[o + j] = stats[o + j]!;
      buffers[o + hidden + j] = (stats[o + hidden + j]! * (n - 1)) / n; // unbiased -> biased
    }
  }
  return buffers;
}

/** Each cell's reconstruction and KL term. */
export function checkFixtureCellTerms(name: string, c: FixtureCase, terms: CellTerms): void {
  for (let i = 0; i < c.dims.cells; i++) {
    closeToFixture(terms.reconstruction[i]!, c.reconstruction[i]!, `${name} reconstruction of cell ${i}`);
    closeToFixture(terms.kl[i]!, c.kl[i]!, `${name} kl of cell ${i}`);
  }
}
