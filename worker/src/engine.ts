// What a worker computes for one microbatch or a group of them. The JS engine (model-engine.ts) runs
// the shared hand-written model one microbatch at a time, synchronously, straight into the outgoing
// message; the device engine (device/engine.ts) runs a group of microbatches in one pass on the
// device and returns their summed gradient asynchronously; the simulated one (benchmarks of the
// coordinator's capacity) skips the math and returns a right-sized gradient.

import type { ModelConfig } from '@atlasvae/shared';
import type { GradientOutput, MicrobatchGradient, InferOutput, InferRequest } from '@atlasvae/shared/model';

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

/** A group's result: the gradient summed over its microbatches (in order), and each microbatch's
 * cell count, loss sums and BatchNorm statistics (their `grad` is empty: not computed per microbatch). */
export interface GroupGradient {
  grad: Float32Array;
  microbatches: MicrobatchGradient[];
}

export interface GradientEngine {
  /** backend name for logs and metrics (wasm, tensorflow, webgpu, cpu, simulated) */
  readonly backend: string;
  /** engine kind for logs and metrics: js, device or simulated */
  readonly kind: string;
  /** the compute device's name (a GPU adapter, or the CPU) for logs and metrics */
  readonly device: string;
  /** microbatches it takes per request, announced in hello (1 = one microbatch per request) */
  readonly group: number;
  /** (Re)build for a model; called on every welcome (a coordinator may restart with another model). */
  configure(modelConfig: ModelConfig, seed: number, paramLength: number, bnLength: number): Promise<void>;
  setParams(params: Float32Array): void;
  /** The microbatch's summed gradient; written into `out` when given and the engine can (the
   * client passes the payload of the outgoing result message, saving a 2 MB copy per microbatch). */
  gradient?(item: WorkItem, out?: GradientOutput): MicrobatchGradient;
  /** Consecutive microbatches of one step in one pass (one or more; every engine has this or `gradient`). */
  gradientGroup?(items: WorkItem[]): Promise<GroupGradient>;
  /** BatchNorm running statistics, for inference (evaluation mode) */
  setBuffers?(buffers: Float32Array): void;
  /** An inference request (results commands on the fleet) on Arrow-encoded cells */
  infer?(req: InferRequest, arrow: Uint8Array, nCells: number): InferOutput | Promise<InferOutput>;
  dispose?(): void;
}

/** Returns zeros of the right size immediately: measures the coordinator and the network, not the math. */
export class SimulatedEngine implements GradientEngine {
  readonly backend = 'simulated';
  readonly kind = 'simulated';
  readonly device = 'none';
  readonly group = 1;
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
