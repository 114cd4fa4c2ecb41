// The coordinator's optimizer state: the shared training step (gradients summed in microbatch order
// by a GradientAccumulator, then applyAccumulated: Adam with coupled L2, BatchNorm running-statistics
// merge) over a TrainingState. The single-process trainer's applyStep is the same two calls, so both
// agree by construction.

import type { ModelConfig, TrainConfig, Checkpoint } from '@atlasvae/shared';
import { bufferLayout } from '@atlasvae/shared/model';
import {
  applyAccumulated,
  GradientAccumulator,
  initTrainingState,
  inOptimizerMemory,
  type TrainingState,
} from '@atlasvae/shared/train';

export interface Optimizer {
  /** current parameters (what workers compute with) */
  readonly params: Float32Array;
  /** floats of BatchNorm batch statistics a worker returns per microbatch */
  readonly bnStatsLength: number;
  /** A fresh (reset) accumulator for the next step's gradients, added in microbatch order as they arrive. */
  accumulator(): GradientAccumulator;
  /** the optimizer step on an accumulator's sum (applyStep split in two; the same result); with
   * `onParams`, each range of final parameters is handed over as soon as Adam has done it */
  applyAccumulated(
    acc: GradientAccumulator,
    epoch: number,
    onParams?: (start: number, end: number) => void,
  ): { applyMs: number; gradNorm: number; aggregationMs: number; optimizerMs: number };
  snapshot(): {
    params: Float32Array;
    buffers: Float32Array;
    adam: { m: Float32Array; v: Float32Array; t: number };
  };
}

export class SharedStepOptimizer implements Optimizer {
  readonly bnStatsLength: number;
  private readonly state: TrainingState;

  /** `state` is copied into an optimizer memory (the SIMD kernels' arrays) unless it is in one */
  constructor(
    state: TrainingState,
    private readonly modelConfig: ModelConfig,
    private readonly trainConfig: TrainConfig,
  ) {
    this.state = inOptimizerMemory(state);
    this.bnStatsLength = bufferLayout(modelConfig).size;
  }

  static fresh(modelConfig: ModelConfig, trainConfig: TrainConfig): SharedStepOptimizer {
    return new SharedStepOptimizer(
      initTrainingState(modelConfig, trainConfig.seed),
      modelConfig,
      trainConfig,
    );
  }

  static fromCheckpoint(c: Checkpoint): SharedStepOptimizer {
    const state: TrainingState = {
      params: c.params,
      buffers: c.buffers,
      adam: { m: c.adam.m, v: c.adam.v, t: c.adam.t },
      globalStep: c.position.globalStep,
      epoch: c.position.epoch,
      stepInEpoch: c.position.stepInEpoch,
    };
    return new SharedStepOptimizer(state, c.modelConfig, c.trainConfig);
  }

  get params(): Float32Array {
    return this.state.params;
  }

  accumulator(): GradientAccumulator {
    const acc = GradientAccumulator.for(this.state);
    acc.reset();
    return acc;
  }

  applyAccumulated(
    acc: GradientAccumulator,
    epoch: number,
    onParams?: (start: number, end: number) => void,
  ): { applyMs: number; gradNorm: number; aggregationMs: number; optimizerMs: number } {
    const t0 = performance.now();
    this.state.epoch = epoch;
    const s = applyAccumulated(this.state, acc, this.trainConfig, this.modelConfig, onParams);
    // applyMs is the time on the step's critical path (the optimizer); summing overlapped the wait
    return {
      applyMs: performance.now() - t0,
      gradNorm: s.gradNorm,
      aggregationMs: s.aggregationMs,
      optimizerMs: s.optimizerMs,
    };
  }

  snapshot(): ReturnType<Optimizer['snapshot']> {
    const s = this.state;
    return {
      params: s.params.slice(),
      buffers: s.buffers.slice(),
      adam: { m: s.adam.m.slice(), v: s.adam.v.slice(), t: s.adam.t },
    };
  }
}
