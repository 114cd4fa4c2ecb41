// The training flags of `train`, `coordinator` and `train-local`: one set, the same names, meanings
// and defaults for the same thing (a single process is one worker: its microbatch defaults to the
// global batch). The fleet's own flags (dataset, step timeout, parameter transport) follow.
import type { Argv } from 'yargs';
import { STREAM_PARAMS } from '../server/coordinator.js';
import { earlyStoppingOptions } from '../early-stopping-flags.js';

/** Model, schedule, checkpoint and validation flags of every training command. `checkpointDefault`
 * says where a run without --checkpoint keeps its model. */
export function trainingOptions<T>(y: Argv<T>, checkpointDefault: string) {
  return y
    .option('epochs', {
      type: 'number',
      describe: "epochs to train (default: scvi's min(round(20000 / cells × 400), 400))",
    })
    .option('max-steps', {
      type: 'number',
      describe: 'stop after this many optimizer steps in total (the plan position is checkpointed)',
    })
    .option('seed', { type: 'number', default: 0, describe: 'seed of initialisation, epoch plans and noise' })
    .option('global-batch', {
      type: 'number',
      describe:
        "cells per optimizer step (default: scvi's 128 for one worker; 256 for 2–8 workers, 32 × workers beyond; recorded in the checkpoint)",
    })
    .option('microbatch', {
      type: 'number',
      describe:
        'cells per gradient computation; a step is split into microbatches of about this size, summed in order (default: the global batch / workers, at least 32, so every worker has one: 128 for 2 workers; one process counts as one worker; recorded in the checkpoint)',
    })
    .option('lr', {
      type: 'number',
      describe:
        "Adam learning rate (default: scvi's 1e-3; 2.5e-3 with the default batch of 2 or more workers)",
    })
    .option('kl-warmup', { type: 'number', describe: "epochs of linear KL warm-up (default 400, scvi's)" })
    .option('n-hidden', { type: 'number', default: 128, describe: 'hidden units per layer' })
    .option('n-latent', { type: 'number', default: 10, describe: 'latent dimensions' })
    .option('n-layers', { type: 'number', default: 1, describe: 'hidden layers in encoder and decoder' })
    .option('dropout', { type: 'number', default: 0.1, describe: 'encoder dropout rate' })
    .option('likelihood', {
      choices: ['nb', 'zinb', 'poisson', 'gaussian'] as const,
      default: 'nb' as const,
      describe: 'count likelihood',
    })
    .option('dispersion', {
      choices: ['gene', 'gene-batch'] as const,
      default: 'gene' as const,
      describe: 'NB dispersion per gene or per gene and batch',
    })
    .option('checkpoint', {
      type: 'string',
      describe: `checkpoint file, written atomically every --checkpoint-every steps, at the end and on SIGINT/SIGTERM (default: ${checkpointDefault})`,
    })
    .option('checkpoint-every', {
      type: 'number',
      default: 500,
      describe: 'steps between checkpoints (0: only at the end)',
    })
    .option('force', {
      type: 'boolean',
      default: false,
      describe:
        'replace an existing --checkpoint file (without it, a run that would overwrite one refuses to start)',
    })
    .option('validation-cells', {
      type: 'number',
      default: 10000,
      describe:
        'held-out cells whose ELBO is evaluated after each epoch, evenly spread over the held-out split (0: none)',
    })
    .options(earlyStoppingOptions);
}

/** `--resume` of the fleet's commands. */
export const resumeOption = {
  resume: {
    type: 'boolean',
    default: false,
    describe: 'continue from --checkpoint (when it exists) exactly where it stopped',
  },
} as const;

/** The flags of the fleet's commands (`train`, `coordinator`): the dataset and how steps travel. */
export function fleetTrainingOptions<T>(y: Argv<T>) {
  const withData = y.option('data', {
    type: 'string',
    demandOption: true,
    describe: 'prepared dataset folder (from `atlasvae prepare` or `atlasvae simulate`)',
  });
  return trainingOptions(withData, 'DATA.ckpt beside the dataset folder')
    .options(resumeOption)
    .option('step-timeout', {
      type: 'number',
      default: 120,
      describe: 'seconds a worker may hold a microbatch before it is handed to another worker',
    })
    .option('stream-params', {
      choices: STREAM_PARAMS,
      default: 'auto' as const,
      describe:
        'send each range of new parameters while Adam computes the next: auto = to workers on other hosts (on this host their reading competes with Adam for the cores)',
    })
    .option('shared-memory', {
      choices: ['auto', 'never'] as const,
      default: 'auto' as const,
      describe:
        'workers on this host read each new parameter vector from a shared-memory file (/dev/shm) instead of the socket, when they can open it',
    });
}
