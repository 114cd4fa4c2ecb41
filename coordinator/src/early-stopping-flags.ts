// `--early-stopping` and `--early-stopping-patience` of `train`, `coordinator` and `train-local`.
import { CliError } from '@atlasvae/shared';
import { DEFAULT_EARLY_STOPPING, type EarlyStoppingConfig } from '@atlasvae/shared/train';

export const earlyStoppingOptions = {
  'early-stopping': {
    type: 'boolean',
    default: false,
    describe:
      "stop when the validation ELBO has not improved for --early-stopping-patience epochs (scvi-tools' early_stopping=True)",
  },
  'early-stopping-patience': {
    type: 'number',
    default: DEFAULT_EARLY_STOPPING.patience,
    describe: 'epochs without improvement of the validation ELBO (min delta 0) before early stopping',
  },
} as const;

/** The early-stopping configuration the flags ask for, or undefined when off. */
export function earlyStoppingConfig(a: {
  'early-stopping'?: boolean;
  'early-stopping-patience'?: number;
}): EarlyStoppingConfig | undefined {
  const patience = a['early-stopping-patience'] ?? DEFAULT_EARLY_STOPPING.patience;
  if (!Number.isInteger(patience) || patience < 1)
    throw new CliError(`--early-stopping-patience must be a positive integer (got ${patience})`);
  return a['early-stopping'] ? { patience, minDelta: DEFAULT_EARLY_STOPPING.minDelta } : undefined;
}
