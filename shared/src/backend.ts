// Compute backend selection for TensorFlow.js: native TensorFlow (GPU, then CPU) when its package is
// installed, else the embedded WebAssembly backend (loaded offline from the package's own .wasm files),
// or the pure-JS CPU backend on request.
import * as tf from '@tensorflow/tfjs-core';
import path from 'node:path';
import { createRequire } from 'node:module';
import { CliError } from './errors.js';

export type BackendChoice = 'auto' | 'tensorflow' | 'wasm' | 'cpu';
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'tensorflow', 'wasm', 'cpu'];

let active: { choice: BackendChoice; name: string } | null = null;
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

async function tryTensorflow(): Promise<string | null> {
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    if (!(await optionalImport(pkg))) continue;
    // tfjs-node registers 'tensorflow' in the tfjs-core it resolves; it must be ours (same version).
    if (!tf.findBackendFactory('tensorflow')) {
      throw new CliError(`${pkg} is installed but registered its backend with another @tensorflow/tfjs-core; install ${pkg}@${tf.version_core}`);
    }
    if (await tf.setBackend('tensorflow')) return pkg;
  }
  return null;
}

async function useWasm(): Promise<void> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const require = createRequire(import.meta.url);
  const dist = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep;
  wasm.setWasmPaths(dist);
  if (!(await tf.setBackend('wasm'))) throw new CliError(`could not start the wasm backend from ${dist}`);
}

async function select(choice: BackendChoice, log: (msg: string) => void): Promise<string> {
  switch (choice) {
    case 'tensorflow': {
      const pkg = await tryTensorflow();
      if (!pkg) throw new CliError('--backend tensorflow: neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node is installed');
      break;
    }
    case 'wasm':
      await useWasm();
      break;
    case 'cpu':
      await import('@tensorflow/tfjs-backend-cpu');
      if (!(await tf.setBackend('cpu'))) throw new CliError('could not start the cpu backend');
      break;
    case 'auto': {
      let native: string | null = null;
      try {
        native = await tryTensorflow();
      } catch (e) {
        // an unusable native install must not stop training: say why and use the embedded backend
        log(`atlasvae: native TensorFlow backend unusable (${(e as Error).message}); using wasm`);
      }
      if (!native) await useWasm();
      break;
    }
    default:
      throw new CliError(`unknown backend '${String(choice)}' (choose ${BACKEND_CHOICES.join(', ')})`);
  }
  await tf.ready();
  return tf.getBackend();
}

/** Start the backend once (idempotent; a later different explicit choice switches). Logs and returns its name. */
export async function initBackend(choice: BackendChoice = 'auto', log: (msg: string) => void = (m) => console.error(m)): Promise<string> {
  const satisfied = (): boolean => active !== null && (choice === 'auto' || active.choice === choice || active.name === choice);
  if (satisfied()) return active!.name;
  if (pending) {
    await pending.catch(() => undefined);
    if (satisfied()) return active!.name;
  }
  pending = select(choice, log);
  try {
    const name = await pending;
    active = { choice, name };
    log(`atlasvae: compute backend ${name}${name === 'wasm' ? ` (simd ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? 'on' : 'off'})` : ''}`);
    return name;
  } finally {
    pending = null;
  }
}

/** The backend started by initBackend, or null. */
export function activeBackend(): string | null {
  return active?.name ?? null;
}
