// Divergence: a step whose loss terms or summed gradient are not finite ends training. One
// decision for both loops (the coordinator's and the single-process trainer's), so they stop at
// the same step with the same message.

export interface StepTerms {
  loss: number;
  reconstruction: number;
  kl: number;
}

/** Which of a step's (or microbatch's) loss terms is not finite, as "the loss is NaN", or null. */
export function nonFiniteTerm(t: StepTerms): string | null {
  for (const [name, v] of [
    ['loss', t.loss],
    ['reconstruction term', t.reconstruction],
    ['KL term', t.kl],
  ] as const) {
    if (!Number.isFinite(v)) return `the ${name} is ${v}`;
  }
  return null;
}

/** Training stopped because a step's loss or gradient became non-finite. */
export class DivergenceError extends Error {
  constructor(
    /** 0-based global step and epoch of the step that diverged */
    readonly globalStep: number,
    readonly epoch: number,
    readonly detail: string,
    /** the last checkpoint written before it (left intact), or null */
    readonly lastCheckpoint: string | null = null,
  ) {
    super(divergenceMessage(globalStep, epoch, detail, lastCheckpoint));
    this.name = 'DivergenceError';
  }

  /** the same error, naming the last checkpoint */
  withCheckpoint(lastCheckpoint: string | null): DivergenceError {
    return new DivergenceError(this.globalStep, this.epoch, this.detail, lastCheckpoint);
  }
}

/** Steps and epochs are counted from 1 here, as the progress lines count them. */
function divergenceMessage(
  globalStep: number,
  epoch: number,
  detail: string,
  lastCheckpoint: string | null,
): string {
  const ckpt = lastCheckpoint
    ? `; the last checkpoint with finite parameters is ${lastCheckpoint} (left as it was)`
    : '; no checkpoint was written before it';
  return `training diverged at step ${globalStep + 1} (epoch ${epoch + 1}): ${detail}${ckpt}. Try a smaller --lr`;
}

/** Throws DivergenceError when a step's loss terms are not finite (checked before the optimizer step). */
export function checkStepLoss(globalStep: number, epoch: number, terms: StepTerms): void {
  const bad = nonFiniteTerm(terms);
  if (bad) throw new DivergenceError(globalStep, epoch, bad);
}

/** Throws DivergenceError when the optimizer step's gradient norm is not finite (its parameters are then unusable). */
export function checkGradNorm(globalStep: number, epoch: number, gradNorm: number): void {
  if (!Number.isFinite(gradNorm))
    throw new DivergenceError(globalStep, epoch, `the gradient norm is ${gradNorm}`);
}
