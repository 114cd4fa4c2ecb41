// The JS gradient engine: the shared hand-written scVI model on the chosen TensorFlow.js backend
// (only its matrix products run there). Noise comes from (seed, step, microbatch), so any worker
// computes the same gradient. One microbatch per request by default; with a group (--group > 1) it
// sums the group's gradients in float32, in order.
import os from 'node:os';

import type { ModelConfig } from '@atlasvae/shared';
import {
  type GradientOutput,
  type MicrobatchGradient,
  createModel,
  type VaeModel,
  microbatchNoise,
  runInference,
  type InferOutput,
  type InferRequest,
} from '@atlasvae/shared/model';
import { initBackend, activeDevice, type BackendChoice } from '@atlasvae/shared/backend';
import { decodeCellBatch } from '@atlasvae/shared/arrow';
import type { GradientEngine, GroupGradient, WorkItem } from './engine.js';

export class ModelEngine implements GradientEngine {
  readonly kind = 'js';
  readonly device = activeDevice() ?? (os.cpus()[0]?.model.trim() || 'cpu');
  private model: VaeModel | null = null;
  private cfg: ModelConfig | null = null;
  private seed = 0;

  private constructor(
    readonly backend: string,
    readonly group: number,
  ) {}

  /** Start the compute backend, then return an engine that uses it. */
  static async create(choice: BackendChoice, log?: (m: string) => void, group = 1): Promise<ModelEngine> {
    return new ModelEngine(await initBackend(choice, log), group);
  }

  async configure(cfg: ModelConfig, seed: number, paramLength: number, bnLength: number): Promise<void> {
    if (!this.model || JSON.stringify(cfg) !== JSON.stringify(this.cfg)) {
      this.model?.dispose();
      this.model = createModel(cfg);
      this.cfg = cfg;
    }
    this.seed = seed;
    if (this.model.layout.size !== paramLength || this.model.bufferLayout.size * 1 !== bnLength) {
      throw new Error(
        `model layout (${this.model.layout.size} parameters, ${this.model.bufferLayout.size} BN statistics) differs from the coordinator's (${paramLength}, ${bnLength}): use the same atlasvae version`,
      );
    }
  }

  setParams(params: Float32Array): void {
    this.model!.setParams(params);
  }

  setBuffers(buffers: Float32Array): void {
    this.model!.setBuffers(buffers);
  }

  infer(req: InferRequest, arrow: Uint8Array, nCells: number): InferOutput {
    const batch = decodeCellBatch(arrow, this.cfg!.nGenes);
    if (batch.nCells !== nCells)
      throw new Error(`inference chunk holds ${batch.nCells} cells, the message says ${nCells}`);
    return runInference(this.model!, batch, req);
  }

  gradient(item: WorkItem, out?: GradientOutput): MicrobatchGradient {
    const model = this.model!;
    const cfg = this.cfg!;
    const batch = decodeCellBatch(item.arrow, cfg.nGenes);
    if (batch.nCells !== item.nCells)
      throw new Error(`microbatch holds ${batch.nCells} cells, the message says ${item.nCells}`);
    const noise = microbatchNoise(cfg, this.seed, item.step, item.microbatch, batch.nCells);
    return model.gradient(batch, noise, item.klWeight, out);
  }

  async gradientGroup(items: WorkItem[]): Promise<GroupGradient> {
    // summed as each is computed (the model may reuse its arrays between calls)
    let grad: Float32Array | null = null;
    const microbatches = items.map((it) => {
      const m = this.gradient(it);
      if (!grad) grad = m.grad.slice();
      else for (let j = 0; j < grad.length; j++) grad[j]! += m.grad[j]!;
      return { ...m, grad: new Float32Array(0), bnStats: m.bnStats.slice() };
    });
    return { grad: grad!, microbatches };
  }
}
