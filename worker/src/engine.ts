// What a worker computes for one microbatch. The real engine runs the shared model; the simulated
// one (benchmarks of the coordinator's capacity) skips the math and returns a right-sized gradient.

import type { ModelConfig } from '@atlasvae/shared/config';
import type { GradientOutput, MicrobatchGradient } from '@atlasvae/shared/model/types';
import type { InferOutput, InferRequest } from '@atlasvae/shared/model/inference';

export interface WorkItem {
  /** global step = parameter version the gradient is computed at */
  step: number;
  epoch: number;
  microbatch: number;
  nCells: number;
  klWeight: number;
  /** Arrow IPC bytes of the microbatch */
  arrow: Uint8Array;
}

export interface GradientEngine {
  /** backend name for logs and metrics (wasm, tensorflow, cpu, simulated) */
  readonly backend: string;
  /** (Re)build for a model; called on every welcome (a coordinator may restart with another model). */
  configure(modelConfig: ModelConfig, seed: number, paramLength: number, bnLength: number): Promise<void>;
  setParams(params: Float32Array): void;
  /** The microbatch's summed gradient; written into `out` when given and the engine can (the
   * client passes the payload of the outgoing result message, saving a 2 MB copy per microbatch). */
  gradient(item: WorkItem, out?: GradientOutput): MicrobatchGradient;
  /** BatchNorm running statistics, for inference (evaluation mode) */
  setBuffers?(buffers: Float32Array): void;
  /** An inference request (results commands on the fleet) on Arrow-encoded cells */
  infer?(req: InferRequest, arrow: Uint8Array, nCells: number): InferOutput;
}

/** Returns zeros of the right size immediately: measures the coordinator and the network, not the math. */
export class SimulatedEngine implements GradientEngine {
  readonly backend = 'simulated';
  private grad = new Float32Array(0);
  private bn = new Float32Array(0);

  async configure(_cfg: ModelConfig, _seed: number, paramLength: number, bnLength: number): Promise<void> {
    this.grad = new Float32Array(paramLength);
    this.bn = new Float32Array(bnLength);
  }

  setParams(): void {}

  gradient(item: WorkItem, out?: GradientOutput): MicrobatchGradient {
    // zeros in place (a memset) when given the message's payload, as a real engine would write it
    const grad = out ? out.grad.fill(0) : this.grad;
    const bnStats = out ? out.bnStats.fill(0) : this.bn;
    return { grad, nCells: item.nCells, reconstructionSum: 0, klSum: 0, lossSum: 0, bnStats };
  }
}
