// Engine and backend choice (worker/src/engine-choice.ts, shared/src/backend.ts): software adapters
// are refused by `auto`, bad choices fail with a message naming what is wrong, and the engine's
// labels reach the worker's metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isSoftwareAdapter, webgpuFlags } from '@atlasvae/shared/backend';
import { createEngine, WorkerMetrics } from '@atlasvae/worker';
import { parseExposition, sampleValue } from '../helpers/prom-text.js';
import { runOk } from '../integration/dist-harness.js';
import { TEST_BED_WEBGPU_FLAGS, webgpuTestBed } from '../helpers/webgpu.js';

test('ATLASVAE_WEBGPU_FLAGS: Dawn toggles and the adapter feature level', () => {
  assert.deepEqual(webgpuFlags('backend=opengl featureLevel=compatibility'), {
    flags: ['backend=opengl'],
    featureLevel: 'compatibility',
  });
  assert.deepEqual(webgpuFlags(''), { flags: [], featureLevel: null });
  assert.deepEqual(webgpuFlags(' enable-dawn-features=a,b  backend=vulkan'), {
    flags: ['enable-dawn-features=a,b', 'backend=vulkan'],
    featureLevel: null,
  });
});

test('software rasterizers are recognised by their adapter names', () => {
  for (const n of [
    'OpenGL version 4.5 (Core Profile) Mesa 22.3.6 / llvmpipe-llvm-15-0-6-256-bits-',
    'llvmpipe (LLVM 15.0.6, 256 bits)',
    'Google SwiftShader',
    'lavapipe',
    'Microsoft Basic Render Driver',
  ]) {
    assert.ok(isSoftwareAdapter(n), n);
  }
  for (const n of [
    'NVIDIA H100 80GB HBM3',
    'NVIDIA A100-SXM4-40GB / nvidia / ampere',
    'AMD Radeon RX 7900 XTX',
  ])
    assert.ok(!isSoftwareAdapter(n), n);
});

test('bad engine choices fail with a message naming the problem', async () => {
  await assert.rejects(
    createEngine({ engine: 'js', backend: 'webgpu', log: () => undefined }),
    /--engine js cannot run on --backend webgpu.*--engine device/,
  );
  await assert.rejects(
    createEngine({ engine: 'js', backend: 'wasm', group: 0, log: () => undefined }),
    /--group must be a positive integer/,
  );
  await assert.rejects(
    runOk(['worker', '--connect', 'ws://127.0.0.1:9', '--group', '65']),
    /--group must be an integer from 1 to 64, not 65/,
  );
});

test(
  'auto refuses a software WebGPU adapter and falls back to the js engine',
  { skip: webgpuTestBed().skip },
  async () => {
    // the test bed's adapter exists but is llvmpipe: auto must not take it for a GPU
    process.env.ATLASVAE_WEBGPU_FLAGS = process.env.ATLASVAE_WEBGPU_FLAGS ?? TEST_BED_WEBGPU_FLAGS;
    const logs: string[] = [];
    const e = await createEngine({ engine: 'auto', backend: 'auto', log: (m) => logs.push(m) });
    assert.equal(e.kind, 'js');
    assert.equal(e.group, 1);
    assert.notEqual(e.backend, 'webgpu');
    assert.ok(
      logs.some((l) => /webgpu not used: .*software rasterizer \(.*llvmpipe/.test(l)),
      logs.join('\n'),
    );
  },
);

test('the engine, backend, device and group are metric labels', async () => {
  const m = new WorkerMetrics();
  m.setEngine({ kind: 'device', backend: 'webgpu', device: 'NVIDIA H100', group: 16 });
  const samples = parseExposition(await m.registry.metrics());
  assert.equal(
    sampleValue(samples, 'atlasvae_engine_info', {
      role: 'worker',
      engine: 'device',
      backend: 'webgpu',
      device: 'NVIDIA H100',
      group: '16',
    }),
    1,
  );
  assert.equal(sampleValue(samples, 'atlasvae_backend_info', { role: 'worker', backend: 'webgpu' }), 1);
});
