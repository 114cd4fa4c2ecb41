// Early stopping on the validation ELBO, as scvi-tools' `early_stopping=True` (Lightning's
// EarlyStopping on elbo_validation, mode min): an epoch improves when its validation ELBO is
// below the best so far by more than `minDelta`; training stops once `patience` epochs in a row
// have not improved. One decision for both loops (coordinator and single-process trainer); its
// state is a function of the per-epoch validation ELBOs, so a resumed run rebuilds it from the
// checkpoint's history.

export interface EarlyStoppingConfig {
  /** epochs without improvement before stopping (scvi: 45) */
  patience: number;
  /** an improvement must exceed this (scvi: 0) */
  minDelta: number;
}

export const DEFAULT_EARLY_STOPPING: EarlyStoppingConfig = { patience: 45, minDelta: 0 };

export class EarlyStopping {
  /** the lowest validation ELBO so far (Infinity before the first) */
  best = Infinity;
  /** 0-based epoch of `best` (−1 before the first) */
  bestEpoch = -1;
  /** consecutive epochs without improvement */
  wait = 0;

  constructor(readonly config: EarlyStoppingConfig) {
    if (!(Number.isInteger(config.patience) && config.patience >= 1))
      throw new RangeError(`early-stopping patience must be a positive integer (got ${config.patience})`);
    if (!(Number.isFinite(config.minDelta) && config.minDelta >= 0))
      throw new RangeError(`early-stopping min delta must be a finite number ≥ 0 (got ${config.minDelta})`);
  }

  /** Record epoch `epoch`'s validation ELBO (lower is better); true when training should stop now. */
  observe(epoch: number, validationElbo: number): boolean {
    if (!Number.isFinite(validationElbo)) return false; // no validation cells: nothing to monitor
    if (validationElbo < this.best - this.config.minDelta) {
      this.best = validationElbo;
      this.bestEpoch = epoch;
      this.wait = 0;
      return false;
    }
    this.wait++;
    return this.wait >= this.config.patience;
  }

  /** The state after the epochs of a history (a resumed run), in epoch order. */
  static replay(
    config: EarlyStoppingConfig,
    epochs: { epoch: number; validationElbo?: number }[],
  ): EarlyStopping {
    const es = new EarlyStopping(config);
    for (const e of epochs) if (e.validationElbo !== undefined) es.observe(e.epoch, e.validationElbo);
    return es;
  }

  /** why training stopped, for logs and the report */
  describe(): string {
    return `early stopping: the validation ELBO has not improved for ${this.wait} epochs (best ${this.best.toFixed(3)} at epoch ${this.bestEpoch + 1})`;
  }
}
