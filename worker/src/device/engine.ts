// The device engine: a GradientEngine over DeviceModel (device/device-model.ts), which keeps the
// parameters on the TensorFlow.js backend's device and runs forward and backward of a whole group
// of microbatches there, with one asynchronous readback per call. This adapter decodes the Arrow
// microbatches into CellBatches and draws each one's noise from (seed, step, microbatch) exactly as
// the JS engine does, so both compute the same function.

import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '@atlasvae/shared';
import {
  type MicrobatchGradient,
  type ParamLayout,
  microbatchNoise,
  runInferenceAsync,
  type AsyncInferenceModel,
  type InferOutput,
  type InferRequest,
} from '@atlasvae/shared/model';
import { decodeCellBatch } from '@atlasvae/shared/arrow';
import type { GradientEngine, GroupGradient, WorkItem } from '../engine.js';
import {
  DeviceModel,
  type DeviceMicrobatch,
  type DeviceGroupResult,
  type DeviceCounters,
} from './device-model.js';

/** What the device engine needs of a device model (DeviceModel). */
export interface DeviceModelApi extends AsyncInferenceModel {
  readonly layout: ParamLayout;
  readonly bufferLayout: ParamLayout;
  setParams(flat: Float32Array): void;
  setBuffers(flat: Float32Array): void;
  gradientGroup(mbs: DeviceMicrobatch[]): Promise<DeviceGroupResult>;
  readonly counters: DeviceCounters;
  dispose(): void;
}

/** Builds the device model for a configuration on the active backend. */
export type DeviceModelFactory = (cfg: ModelConfig) => DeviceModelApi | Promise<DeviceModelApi>;

/** DeviceModel (device/device-model.ts) on the active backend. */
export const deviceModelFactory: DeviceModelFactory = (cfg) => DeviceModel.create(tf, cfg);

export class DeviceEngine implements GradientEngine {
  readonly kind = 'device';
  private model: DeviceModelApi | null = null;
  private cfg: ModelConfig | null = null;
  private seed = 0;

  constructor(
    readonly backend: string,
    readonly device: string,
    readonly group: number,
    private readonly factory: DeviceModelFactory = deviceModelFactory,
  ) {}

  /** kernels, transfers and bytes of the model so far (bench) */
  get counters(): DeviceCounters | null {
    return this.model?.counters ?? null;
  }

  async configure(cfg: ModelConfig, seed: number, paramLength: number, bnLength: number): Promise<void> {
    if (!this.model || JSON.stringify(cfg) !== JSON.stringify(this.cfg)) {
      this.model?.dispose();
      this.model = null;
      this.model = await this.factory(cfg);
      this.cfg = cfg;
    }
    this.seed = seed;
    if (this.model.layout.size !== paramLength || this.model.bufferLayout.size !== bnLength) {
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

  async gradientGroup(items: WorkItem[]): Promise<GroupGradient> {
    const cfg = this.cfg!;
    const mbs: DeviceMicrobatch[] = items.map((item) => {
      const batch = decodeCellBatch(item.arrow, cfg.nGenes);
      if (batch.nCells !== item.nCells)
        throw new Error(
          `microbatch ${item.microbatch} holds ${batch.nCells} cells, the message says ${item.nCells}`,
        );
      return {
        batch,
        noise: microbatchNoise(cfg, this.seed, item.step, item.microbatch, batch.nCells),
        klWeight: item.klWeight,
      };
    });
    const r = await this.model!.gradientGroup(mbs);
    const none = new Float32Array(0);
    const microbatches: MicrobatchGradient[] = r.microbatches.map((t) => ({
      grad: none,
      nCells: t.nCells,
      reconstructionSum: t.reconstructionSum,
      klSum: t.klSum,
      lossSum: t.lossSum,
      bnStats: t.bnStats,
    }));
    return { grad: r.grad, microbatches };
  }

  /** An inference request (results commands on the fleet): the shared ops, on the device. */
  async infer(req: InferRequest, arrow: Uint8Array, nCells: number): Promise<InferOutput> {
    const batch = decodeCellBatch(arrow, this.cfg!.nGenes);
    if (batch.nCells !== nCells)
      throw new Error(`inference chunk holds ${batch.nCells} cells, the message says ${nCells}`);
    return runInferenceAsync(this.model!, batch, req);
  }

  dispose(): void {
    this.model?.dispose();
    this.model = null;
  }
}
