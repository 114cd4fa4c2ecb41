// The training history: one record per epoch, the same shape for every executor (the fleet, the
// in-process one) and in every checkpoint. Checkpoints written by the old single-process trainer
// carried another shape; `historyFromCheckpoint` converts it when such a file is read.

export interface EpochRecord {
  epoch: number;
  nCells: number;
  /** per-cell means */
  loss: number;
  reconstruction: number;
  kl: number;
  /** negative ELBO per cell (reconstruction + KL), scvi's elbo_train */
  elbo: number;
  /** the KL weight of the epoch's warm-up (absent from records of older checkpoints) */
  klWeight?: number;
  /** held-out negative ELBO per cell (scvi's elbo_validation), when evaluated */
  validationElbo?: number;
  validationReconstruction?: number;
  validationKl?: number;
  /** the epoch was still running when the record was made (a checkpoint mid-epoch) */
  partial?: boolean;
}

const num = (v: unknown): v is number => typeof v === 'number';

/** One old single-process record (trainLoss, trainElbo, cells…) as an EpochRecord. */
function fromTrainerSummary(r: Record<string, unknown>): EpochRecord {
  const rec: EpochRecord = {
    epoch: r.epoch as number,
    nCells: num(r.cells) ? r.cells : 0,
    loss: num(r.trainLoss) ? r.trainLoss : NaN,
    reconstruction: num(r.trainReconstruction) ? r.trainReconstruction : NaN,
    kl: num(r.trainKl) ? r.trainKl : NaN,
    elbo: num(r.trainElbo) ? r.trainElbo : NaN,
  };
  if (num(r.klWeight)) rec.klWeight = r.klWeight;
  // the old trainer wrote NaN for a run without validation cells: nothing was evaluated
  if (num(r.validationElbo) && !Number.isNaN(r.validationElbo)) {
    rec.validationElbo = r.validationElbo;
    if (num(r.validationReconstruction)) rec.validationReconstruction = r.validationReconstruction;
    if (num(r.validationKl)) rec.validationKl = r.validationKl;
  }
  return rec;
}

/** A checkpoint's `history` as EpochRecords, whichever loop wrote it; entries of neither shape are dropped. */
export function historyFromCheckpoint(raw: unknown): EpochRecord[] {
  if (!Array.isArray(raw)) return [];
  const out: EpochRecord[] = [];
  for (const r of raw as unknown[]) {
    if (r === null || typeof r !== 'object') continue;
    const o = r as Record<string, unknown>;
    if (!num(o.epoch)) continue;
    if (num(o.nCells) && num(o.elbo)) out.push(o as unknown as EpochRecord);
    else if (num(o.trainElbo)) out.push(fromTrainerSummary(o));
  }
  return out;
}
