// The TensorFlow.js backend device-model tests run on: ATLASVAE_TEST_BACKEND = cpu (default), wasm or
// webgpu (Dawn's Node bindings, npm `webgpu`, with @tensorflow/tfjs-backend-webgpu; on a machine without
// a GPU through Dawn's OpenGL backend on Mesa llvmpipe: run with EGL_PLATFORM=surfaceless).
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '@atlasvae/shared/backend';

export const deviceTestBackend = process.env.ATLASVAE_TEST_BACKEND ?? 'cpu';

/** Import a module that is not a dependency (tsc must not resolve it). */
async function optional(name: string): Promise<Record<string, unknown>> {
  return (await import(name)) as Record<string, unknown>;
}

async function startWebgpu(): Promise<void> {
  const dawn = await optional('webgpu');
  Object.assign(globalThis, dawn['globals']);
  const create = dawn['create'] as (opts: string[]) => { requestAdapter(o?: object): Promise<unknown> };
  // a real GPU: Vulkan (the default); no GPU here: OpenGL on llvmpipe, at the compatibility level
  const gpu = create(
    process.env.ATLASVAE_DAWN_BACKEND ? [`backend=${process.env.ATLASVAE_DAWN_BACKEND}`] : ['backend=opengl'],
  );
  const request = gpu.requestAdapter.bind(gpu);
  gpu.requestAdapter = (o: object = {}) => request({ ...o, featureLevel: 'compatibility' });
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true });
  await optional('@tensorflow/tfjs-backend-webgpu');
  if (!(await tf.setBackend('webgpu'))) throw new Error('the webgpu backend did not start');
}

/** Starts the test backend once; returns the tfjs-core namespace to hand to DeviceModel.create. */
export async function useDeviceTestBackend(): Promise<typeof tf> {
  if (tf.getBackend() !== deviceTestBackend) {
    if (deviceTestBackend === 'webgpu') await startWebgpu();
    else if (deviceTestBackend === 'cpu' || deviceTestBackend === 'wasm')
      await initBackend(deviceTestBackend, () => undefined);
    else throw new Error(`ATLASVAE_TEST_BACKEND=${deviceTestBackend}: choose cpu, wasm or webgpu`);
  }
  await tf.ready();
  return tf;
}
