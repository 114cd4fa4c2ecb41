// The end-of-training summary printed by `coordinator`, `train` and `demo` (stdout).
import type { RunResult } from './run.js';

export function reportOutcome(r: RunResult): void {
  const last = r.history[r.history.length - 1];
  const how =
    r.stopped === 'finished'
      ? 'training finished'
      : r.stopped === 'max-steps'
        ? 'stopped after --max-steps'
        : r.stopped === 'early-stopping'
          ? `stopped early (${r.earlyStopping?.describe() ?? 'early stopping'})`
          : 'interrupted';
  const lines = [
    `${how}: ${r.position.globalStep} steps, ${r.position.epoch} epochs complete, ${r.seconds.toFixed(1)} s`,
  ];
  if (last)
    lines.push(
      `final training ELBO (negative, per cell; epoch ${last.epoch + 1}${last.partial ? ', partial' : ''}): ${last.elbo.toFixed(3)}  (reconstruction ${last.reconstruction.toFixed(3)}, KL ${last.kl.toFixed(3)})`,
    );
  const lastValidated = [...r.history].reverse().find((h) => h.validationElbo !== undefined);
  if (lastValidated)
    lines.push(
      `final held-out ELBO (negative, per cell; epoch ${lastValidated.epoch + 1}): ${lastValidated.validationElbo!.toFixed(3)}  (reconstruction ${lastValidated.validationReconstruction!.toFixed(3)}, KL ${lastValidated.validationKl!.toFixed(3)})`,
    );
  if (r.lastCheckpoint) lines.push(`checkpoint: ${r.lastCheckpoint}`);
  process.stdout.write(lines.join('\n') + '\n');
}
