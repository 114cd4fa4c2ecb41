// The WebGPU test bed: Dawn (npm `webgpu`) on this machine's adapter. Without a GPU that is Mesa's
// llvmpipe through Dawn's OpenGL backend (ATLASVAE_WEBGPU_FLAGS below, unless the environment sets
// it): it checks correctness, never speed. Probed in a child process so the test process's own
// TensorFlow.js backend stays as it is.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './paths.js';

/** Dawn's flags for the test bed when the environment names none (a real GPU: set it to ''). */
export const TEST_BED_WEBGPU_FLAGS = 'backend=opengl featureLevel=compatibility';

/** Environment for processes that start the webgpu backend. */
export const webgpuEnv: Record<string, string> = {
  ATLASVAE_WEBGPU_FLAGS: process.env.ATLASVAE_WEBGPU_FLAGS ?? TEST_BED_WEBGPU_FLAGS,
};

let probed: { skip: string | false; device: string } | null = null;

/** `skip` is false when a webgpu backend starts here and runs a matMul right; else the reason. */
export function webgpuTestBed(): { skip: string | false; device: string } {
  if (probed) return probed;
  const backend = path.join(repoRoot, 'shared/dist/backend.js');
  const script = `
    const { initBackend, activeDevice } = await import(${JSON.stringify(backend)});
    const tf = await import('@tensorflow/tfjs-core');
    await initBackend('webgpu', () => undefined);
    const a = tf.tensor2d([[1, 2], [3, 4]]);
    const r = Array.from(await tf.matMul(a, a).data());
    if (r.join() !== '7,10,15,22') throw new Error('matMul gave ' + r);
    console.log('DEVICE ' + activeDevice());`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: path.join(repoRoot, 'shared'),
    env: { ...process.env, ...webgpuEnv },
    encoding: 'utf8',
    timeout: 60_000,
  });
  const m = /DEVICE (.*)/.exec(r.stdout ?? '');
  if (r.status === 0 && m) probed = { skip: false, device: m[1]! };
  else {
    const why =
      (r.stderr ?? '')
        .split('\n')
        .filter((l) => /Error|adapter|cannot/.test(l) && !/artificially reduced/.test(l))
        .slice(-1)[0] ?? `exit ${r.status ?? r.signal}`;
    probed = { skip: `no WebGPU adapter can be created here (${why.trim().slice(0, 300)})`, device: '' };
  }
  return probed;
}
