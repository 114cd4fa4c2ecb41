// What the coordinator needs from a prepared dataset: the training cells, the metadata a
// checkpoint records, and a microbatch's Arrow IPC bytes by global cell indices.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import type { CellSource } from '@atlasvae/shared';
import type { Dataset } from '../data/dataset.js';

export interface TrainingData {
  nGenes: number;
  nBatch: number;
  /** global indices of the training cells, ascending */
  train: Uint32Array;
  /** global indices of the held-out cells, ascending */
  validation: Uint32Array;
  /** cells by global index (the coordinator evaluates the held-out ELBO itself) */
  source: CellSource;
  genes: string[];
  batchCategories: string[];
  labelCategories: string[];
  /** SHA-256 of the manifest file: a resume on other data is refused */
  manifestHash: string | null;
  microbatchArrow(cells: Uint32Array): Promise<Uint8Array>;
  /** an upper bound of a microbatch message's size */
  maxMicrobatchBytes(cells: number): number;
}

export function manifestHash(dir: string): string {
  return crypto
    .createHash('sha256')
    .update(fs.readFileSync(path.join(dir, 'manifest.json')))
    .digest('hex');
}

export function trainingData(ds: Dataset): TrainingData {
  const m = ds.manifest;
  return {
    nGenes: m.nGenes,
    nBatch: m.batchCategories.length,
    train: ds.train,
    validation: ds.validation,
    source: ds.source,
    genes: m.genes,
    batchCategories: m.batchCategories,
    labelCategories: m.labelCategories ?? [],
    manifestHash: manifestHash(ds.dir),
    microbatchArrow: (cells) => ds.source.getCellsArrow(cells),
    maxMicrobatchBytes: (cells) => 64 * 1024 + cells * (m.nGenes * 8 + 64),
  };
}
