// Which engine a worker runs, on which backend. `--engine js` is the hand-written model (matrix
// products on the backend); `--engine device` keeps the whole step on the backend's device
// (device/engine.ts). `auto` picks, in order: native TensorFlow on a GPU (@tensorflow/tfjs-node-gpu)
// → WebGPU with a hardware (not software-rasterizer) adapter → today's JS engine on the default
// backend (tfjs-node when installed, else wasm). Optional backends load only when chosen or probed.

import { CliError } from '@atlasvae/shared';
import {
  initBackend,
  activeDevice,
  startWebgpu,
  tryTensorflowGpu,
  type BackendChoice,
} from '@atlasvae/shared/backend';
import type { GradientEngine } from './engine.js';
import { ModelEngine } from './model-engine.js';
import type { DeviceModelFactory } from './device/engine.js';

export type EngineChoice = 'auto' | 'js' | 'device';
export const ENGINE_CHOICES: readonly EngineChoice[] = ['auto', 'js', 'device'];

/** Microbatches per request when --group is not given: a device call pays per-op dispatch, so it
 * wants thousands of cells; the JS engine gains nothing from groups. */
export const DEFAULT_DEVICE_GROUP = 16;

export interface EngineOptions {
  engine: EngineChoice;
  backend: BackendChoice;
  /** microbatches per request; default 1 (js) or DEFAULT_DEVICE_GROUP (device) */
  group?: number;
  log?: (m: string) => void;
  /** the device model (tests may pass another) */
  deviceModel?: DeviceModelFactory;
}

/** Start the chosen backend and build the engine on it; a chosen backend that cannot start throws
 * a CliError naming what is missing. */
export async function createEngine(o: EngineOptions): Promise<GradientEngine> {
  const log = o.log ?? ((m: string) => console.error(m));
  if (o.group !== undefined && !(Number.isInteger(o.group) && o.group >= 1))
    throw new CliError(`--group must be a positive integer, not ${o.group}`);
  const device = async (backend: BackendChoice): Promise<GradientEngine> => {
    const name = await initBackend(backend, log);
    // loads @tensorflow/tfjs (its gradient functions) only for a device engine
    const { DeviceEngine, deviceModelFactory } = await import('./device/engine.js');
    return new DeviceEngine(
      name,
      activeDevice() ?? name,
      o.group ?? DEFAULT_DEVICE_GROUP,
      o.deviceModel ?? deviceModelFactory,
    );
  };
  if (o.engine === 'js') {
    // its matrix products read back with dataSync, which tfjs-backend-webgpu cannot do outside a browser
    if (o.backend === 'webgpu')
      throw new CliError(
        '--engine js cannot run on --backend webgpu (the js engine reads each product back synchronously, which the webgpu backend cannot do in Node): use --engine device',
      );
    return ModelEngine.create(o.backend, log, o.group ?? 1);
  }
  if (o.backend !== 'auto') {
    // an explicit backend: the device engine on it (auto engine: on the GPU backends only)
    if (o.engine === 'device' || o.backend === 'webgpu' || o.backend === 'tensorflow')
      return device(o.backend);
    return ModelEngine.create(o.backend, log, o.group ?? 1);
  }
  // auto backend: probe the GPUs
  try {
    if (await tryTensorflowGpu()) return device('tensorflow');
  } catch (e) {
    log(`atlasvae: @tensorflow/tfjs-node-gpu unusable (${(e as Error).message})`);
  }
  try {
    const w = await startWebgpu(true);
    if ('device' in w) return device('webgpu');
    log(`atlasvae: webgpu not used: ${w.refused}`);
  } catch (e) {
    log(`atlasvae: webgpu not used: ${(e as Error).message}`);
  }
  if (o.engine === 'device')
    throw new CliError(
      '--engine device --backend auto: no GPU backend (neither @tensorflow/tfjs-node-gpu nor a hardware WebGPU adapter); name one with --backend tensorflow|webgpu|cpu|wasm',
    );
  return ModelEngine.create('auto', log, o.group ?? 1);
}
