// Compute backend selection for TensorFlow.js: native TensorFlow (GPU, then CPU) when its package is
// installed, else the embedded WebAssembly backend (loaded offline from the package's own .wasm files),
// or the pure-JS CPU backend on request; WebGPU (Dawn's Node bindings, npm `webgpu`) when chosen or
// probed by the worker's engine choice (worker/src/engine-choice.ts). Every optional backend is
// imported only when chosen or probed.
import * as tf from '@tensorflow/tfjs-core';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { CliError } from './errors.js';

export type BackendChoice = 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'];
/** Backends the hand-written JS model runs on in this process (train-local, results commands): not
 * webgpu, whose synchronous readbacks need a browser. */
export const JS_MODEL_BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'tensorflow', 'wasm', 'cpu'];

let active: { choice: BackendChoice; name: string; device: string } | null = null;
/** the device the last backend started runs on, set by the code that started it */
let startedDevice = '';
let pending: Promise<string> | null = null;

/** Import a module by a name tsc cannot resolve at compile time (it is not a dependency). */
async function optionalImport(name: string): Promise<boolean> {
  try {
    await import(name);
    return true;
  } catch {
    return false;
  }
}

async function tryTensorflow(
  packages = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'],
): Promise<string | null> {
  // libtensorflow takes almost all GPU memory unless told to grow (tfjs has no API for it)
  process.env.TF_FORCE_GPU_ALLOW_GROWTH ??= 'true';
  // deterministic GPU kernels: one engine, backend and group size give bit-identical parameters
  process.env.TF_DETERMINISTIC_OPS ??= '1';
  for (const pkg of packages) {
    if (!(await optionalImport(pkg))) continue;
    // tfjs-node registers 'tensorflow' in the tfjs-core it resolves; it must be ours (same version).
    if (!tf.findBackendFactory('tensorflow')) {
      throw new CliError(
        `${pkg} is installed but registered its backend with another @tensorflow/tfjs-core; install ${pkg}@${tf.version_core}`,
      );
    }
    if (await tf.setBackend('tensorflow')) {
      startedDevice = pkg.endsWith('-gpu')
        ? `GPU (libtensorflow; CUDA_VISIBLE_DEVICES=${process.env.CUDA_VISIBLE_DEVICES ?? 'all'})`
        : `${cpuName()} (libtensorflow)`;
      return pkg;
    }
  }
  return null;
}

/** The native TensorFlow backend on a GPU (@tensorflow/tfjs-node-gpu), or null when not installed. */
export async function tryTensorflowGpu(): Promise<string | null> {
  return tryTensorflow(['@tensorflow/tfjs-node-gpu']);
}

function cpuName(): string {
  return os.cpus()[0]?.model.trim() || 'cpu';
}

/** What `ATLASVAE_WEBGPU_FLAGS` asks of Dawn: toggles for `create()` (e.g. backend=opengl) and the
 * adapter's feature level (`featureLevel=compatibility`, which Dawn's OpenGL backend needs). */
export function webgpuFlags(value = process.env.ATLASVAE_WEBGPU_FLAGS ?? ''): {
  flags: string[];
  featureLevel: string | null;
} {
  const flags: string[] = [];
  let featureLevel: string | null = null;
  // space-separated: a toggle's own value may hold commas (enable-dawn-features=a,b)
  for (const f of value.split(/\s+/).filter(Boolean)) {
    const m = /^featureLevel=(.+)$/.exec(f);
    if (m) featureLevel = m[1]!;
    else flags.push(f);
  }
  return { flags, featureLevel };
}

/** Software rasterizers: an adapter from one of these says nothing about a GPU. */
export function isSoftwareAdapter(description: string): boolean {
  return /llvmpipe|lavapipe|swiftshader|softpipe|software|microsoft basic render/i.test(description);
}

/** The subset of Dawn's Node bindings used here (npm `webgpu`, whose own types must satisfy it). */
interface DawnModule {
  create(flags: string[]): { requestAdapter(o?: object): Promise<DawnAdapter | null> };
  globals: object;
}
interface DawnAdapter {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string };
  isFallbackAdapter?: boolean;
}

/**
 * Start TensorFlow.js's webgpu backend on Dawn. With `hardwareOnly`, a software adapter (llvmpipe,
 * SwiftShader, lavapipe) is refused: returns null with the reason. Otherwise a missing package or
 * adapter throws a CliError naming it.
 */
export async function startWebgpu(hardwareOnly: boolean): Promise<{ device: string } | { refused: string }> {
  let dawn: DawnModule;
  try {
    dawn = await import('webgpu');
  } catch (e) {
    throw new CliError(
      `webgpu backend: the npm package webgpu (Dawn's Node bindings, 0.6.2) cannot be loaded: ${(e as Error).message.split('\n')[0]}`,
    );
  }
  const { flags, featureLevel } = webgpuFlags();
  // Dawn's OpenGL backend initialises EGL without a display only on Mesa's surfaceless platform
  if (flags.some((f) => /^backend=opengl/.test(f))) process.env.EGL_PLATFORM ??= 'surfaceless';
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create(flags);
  const request = gpu.requestAdapter.bind(gpu);
  const extra = featureLevel ? { featureLevel } : {};
  const adapter = await request({ powerPreference: 'high-performance', ...extra });
  const how =
    flags.length || featureLevel ? ` (ATLASVAE_WEBGPU_FLAGS=${process.env.ATLASVAE_WEBGPU_FLAGS})` : '';
  if (!adapter) {
    const msg = `no WebGPU adapter${how}: no Vulkan GPU driver found (on a machine without a GPU, Mesa's llvmpipe serves as a test bed: ATLASVAE_WEBGPU_FLAGS='backend=opengl featureLevel=compatibility')`;
    if (hardwareOnly) return { refused: msg };
    throw new CliError(`webgpu backend: ${msg}`);
  }
  const i = adapter.info ?? {};
  const device =
    [i.description, i.device, i.vendor, i.architecture].filter((x) => x).join(' / ') || 'unknown adapter';
  if (hardwareOnly && (adapter.isFallbackAdapter || isSoftwareAdapter(device)))
    return { refused: `the WebGPU adapter is a software rasterizer (${device})` };
  // tfjs asks for an adapter with powerPreference only: give it the same feature level
  (gpu as { requestAdapter(o?: object): Promise<unknown> }).requestAdapter = (o: object = {}) =>
    request({ ...o, ...extra });
  const nav = (globalThis as { navigator?: object }).navigator;
  if (nav) Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true });
  else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  try {
    await import('@tensorflow/tfjs-backend-webgpu');
  } catch (e) {
    throw new CliError(
      `webgpu backend: @tensorflow/tfjs-backend-webgpu@${tf.version_core} cannot be loaded: ${(e as Error).message.split('\n')[0]}`,
    );
  }
  if (!tf.findBackendFactory('webgpu'))
    throw new CliError(
      `webgpu backend: @tensorflow/tfjs-backend-webgpu registered with another @tensorflow/tfjs-core; install @tensorflow/tfjs-backend-webgpu@${tf.version_core}`,
    );
  if (!(await tf.setBackend('webgpu')))
    throw new CliError(`webgpu backend: TensorFlow.js could not start it on ${device}`);
  startedDevice = device;
  return { device };
}

async function useWasm(): Promise<void> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const require = createRequire(import.meta.url);
  const dist =
    path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep;
  wasm.setWasmPaths(dist);
  if (!(await tf.setBackend('wasm'))) throw new CliError(`could not start the wasm backend from ${dist}`);
}

async function select(choice: BackendChoice, log: (msg: string) => void): Promise<string> {
  switch (choice) {
    case 'tensorflow': {
      const pkg = await tryTensorflow();
      if (!pkg)
        throw new CliError(
          '--backend tensorflow: neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node is installed',
        );
      break;
    }
    case 'webgpu':
      // already started by a probe (worker/src/engine-choice.ts)
      if (!(tf.getBackend() === 'webgpu' && startedDevice)) await startWebgpu(false);
      break;
    case 'wasm':
      await useWasm();
      startedDevice = cpuName();
      break;
    case 'cpu':
      await import('@tensorflow/tfjs-backend-cpu');
      if (!(await tf.setBackend('cpu'))) throw new CliError('could not start the cpu backend');
      startedDevice = cpuName();
      break;
    case 'auto': {
      let native: string | null = null;
      try {
        native = await tryTensorflow();
      } catch (e) {
        // an unusable native install must not stop training: say why and use the embedded backend
        log(`atlasvae: native TensorFlow backend unusable (${(e as Error).message}); using wasm`);
      }
      if (!native) {
        await useWasm();
        startedDevice = cpuName();
      }
      break;
    }
    default:
      throw new CliError(`unknown backend '${String(choice)}' (choose ${BACKEND_CHOICES.join(', ')})`);
  }
  await tf.ready();
  return tf.getBackend();
}

/** Start the backend once (idempotent; a later different explicit choice switches). Logs and returns its name. */
export async function initBackend(
  choice: BackendChoice = 'auto',
  log: (msg: string) => void = (m) => console.error(m),
): Promise<string> {
  const satisfied = (): boolean =>
    active !== null && (choice === 'auto' || active.choice === choice || active.name === choice);
  if (satisfied()) return active!.name;
  if (pending) {
    await pending.catch(() => undefined);
    if (satisfied()) return active!.name;
  }
  pending = select(choice, log);
  try {
    const name = await pending;
    active = { choice, name, device: startedDevice };
    log(
      `atlasvae: compute backend ${name} on ${startedDevice}${name === 'wasm' ? ` (simd ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? 'on' : 'off'})` : ''}`,
    );
    return name;
  } finally {
    pending = null;
  }
}

/** The backend started by initBackend, or null. */
export function activeBackend(): string | null {
  return active?.name ?? null;
}

/** The device the backend started by initBackend runs on (a GPU adapter's name, or the CPU's), or null. */
export function activeDevice(): string | null {
  return active?.device ?? null;
}
